"""Type stubs for fastmlp._core, the private C++ extension (cpp/bindings/).

Use the fastmlp package instead: it validates input and converts arrays first.
These functions check dtype, shape, layout and writability again and raise
TypeError / ValueError (IndexError for Network*.cache) on a mismatch. Arrays
are float32 or float64, all of one dtype per call, C-contiguous unless said
otherwise; ``out``-style arguments are written in place (a read-only one is
refused; inputs may be read-only) and may not share memory with an input
unless said otherwise. The GIL is released while a kernel runs.
"""

from typing import Callable, Generic, Literal, Sequence, TypedDict, TypeVar, overload

import numpy as np
import numpy.typing as npt

__version__: str

_Float = TypeVar("_Float", np.float32, np.float64)
_FloatArray = npt.NDArray[np.float32] | npt.NDArray[np.float64]
_ActivationName = str  # one of ACTIVATIONS (the names live in the C++ tables only)

# ---- names and configurations (cpp/bindings/configs.cpp) ---------------------------

# The names of each C++ enum, in enum order, from its one table (fastmlp/names.hpp).
ACTIVATIONS: tuple[str, ...]
LOSSES: tuple[str, ...]
OPTIMIZERS: tuple[str, ...]
SCHEDULES: tuple[str, ...]
INIT_SCHEMES: tuple[str, ...]
LAYER_TYPES: tuple[str, ...]
FIT_STATUSES: tuple[str, ...]
MAX_THREADS: int  # set_num_threads takes 1..MAX_THREADS

class OptimizerConfig:
    """An update rule and its numbers, validated on construction (ValueError
    naming the bad value); clip_norm / clip_value 0 mean no clipping."""
    def __init__(
        self, *, kind: str = "sgd", lr: float = 0.01, momentum: float = 0.0, dampening: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = False, beta1: float = 0.9, beta2: float = 0.999,
        eps: float = 1e-8, clip_norm: float = 0.0, clip_value: float = 0.0,
    ) -> None: ...
    @property
    def kind(self) -> str: ...
    lr: float  # the attributes are read-only
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    beta1: float
    beta2: float
    eps: float
    clip_norm: float
    clip_value: float
    @property
    def state_buffers(self) -> int:
        """State buffers the rule keeps: 0 (plain sgd), 1 (sgd with momentum) or 2."""

class ScheduleConfig:
    """A learning-rate schedule (see fastmlp.schedules), validated on construction."""
    def __init__(
        self, *, kind: str = "constant", warmup_steps: int = 0, step_size: int = 1, gamma: float = 1.0,
        total_steps: int = 1, min_factor: float = 0.0,
    ) -> None: ...
    @property
    def kind(self) -> str: ...
    warmup_steps: int  # the attributes are read-only
    step_size: int
    gamma: float
    total_steps: int
    min_factor: float

# ---- kernels ----------------------------------------------------------------------

def gemm(
    a: _FloatArray,
    b: _FloatArray,
    c: _FloatArray,
    alpha: float,
    beta: float,
    trans_a: bool,
    trans_b: bool,
    naive: bool = False,
) -> None:
    """c = alpha · op(a) · op(b) + beta · c, in place. 2-D matrices with unit
    column stride (any row stride >= the row length); op transposes when trans_* is set.
    naive runs the plain triple-loop reference kernel instead of the blocked one."""

def gemm_fast_path(
    a: object, b: object, c: object, alpha: object, beta: object, trans_a: object, trans_b: object
) -> _FloatArray | None:
    """fastmlp.kernels.gemm's common case in one call: ndarrays a, b (and c) of one
    float dtype with rows or columns contiguous, c None or a writable matrix sharing
    no memory with a or b, finite float or int alpha (and beta when c is given),
    trans_* True or False. Returns c (or a new C), or None, without raising, for any
    other arguments (kernels.gemm then converts, copies or raises)."""

def activation_forward(name: _ActivationName, z: _FloatArray, out: _FloatArray) -> None:
    """out = f(z), elementwise; z and out of equal size (out may be z itself)."""

def activation_backward(
    name: _ActivationName, z: _FloatArray, a: _FloatArray, da: _FloatArray, out: _FloatArray
) -> None:
    """out = da ⊙ f'(z), with a = f(z); all four of equal size (out may be da itself)."""

def bias_activation_forward(name: _ActivationName, z: _FloatArray, bias: _FloatArray, out: _FloatArray) -> None:
    """z (B, O) += bias (O,) in place, and out = f(z): one pass."""

def activation_bias_backward(
    name: _ActivationName, z: _FloatArray, a: _FloatArray, da: _FloatArray, out: _FloatArray,
    d_bias: _FloatArray, accumulate: bool,
) -> None:
    """out = da ⊙ f'(z); d_bias = (or +=, when accumulate) the column sums of out: one pass."""

def loss(name: str, pred: _FloatArray, target: _FloatArray, grad: _FloatArray | None, delta: float = 1.0,
         weight: _FloatArray | None = None) -> float:
    """The mean loss (mse, cross_entropy, binary_cross_entropy, huber) of pred (B, O)
    against dense target (B, O), weighted by the rows' weight (B,) when given; also
    dL/dpred into grad when given (may be pred)."""

def count_correct(name: str, pred: _FloatArray, target: _FloatArray, weight: _FloatArray | None = None) -> float:
    """Rows (cross_entropy: argmax) or elements (binary_cross_entropy: logit > 0) right,
    each counting its row's weight when given."""

def softmax(z: _FloatArray, out: _FloatArray) -> None:
    """Row-wise softmax of z (B, O) into out (may be z)."""

def grad_norm(grads: _FloatArray, clip_value: float = 0.0) -> float:
    """Global L2 norm of grads (1-D), after clamping to ±clip_value when it is > 0."""

def optimizer_update(
    config: OptimizerConfig,
    params: _FloatArray,
    grads: _FloatArray,
    state1: _FloatArray | None,
    state2: _FloatArray | None,
    segments: list[tuple[int, int]],
    t: int,
    lr: float,
    grad_scale: float = 1.0,
) -> int:
    """One update of config.kind at step t >= 1, in place on params and the state
    buffers (none of them sharing memory with another or with grads). Returns
    how many parameters kept their value (non-finite update)."""

# The layers between dense ones (cpp/include/fastmlp/layers.hpp): x, xhat, y, dy, dx are
# (B, W); gain, bias, d_gain, d_bias and the running statistics (W,); rstd (B,) for layer
# norm, (W,) for batch norm. d_gain and d_bias are written, or added to when accumulate.

def layer_norm_forward(
    x: _FloatArray, gain: _FloatArray, bias: _FloatArray, xhat: _FloatArray, rstd: _FloatArray,
    y: _FloatArray, eps: float,
) -> None:
    """Layer norm over each row: xhat, rstd, y written (xhat may be x; y may be xhat or x)."""

def layer_norm_backward(
    dy: _FloatArray, xhat: _FloatArray, rstd: _FloatArray, gain: _FloatArray, dx: _FloatArray,
    d_gain: _FloatArray, d_bias: _FloatArray, accumulate: bool,
) -> None:
    """Layer norm's gradients: dx (may be dy), d_gain, d_bias."""

def batch_norm_forward_train(
    x: _FloatArray, gain: _FloatArray, bias: _FloatArray, xhat: _FloatArray, rstd: _FloatArray,
    y: _FloatArray, running_mean: _FloatArray | None, running_var: _FloatArray | None, eps: float,
    momentum: float,
) -> None:
    """Batch norm with the batch's statistics (B >= 2, else ValueError): xhat, rstd, y written
    (xhat may be x; y may be xhat or x); the running statistics, when given, moved in place
    (momentum in [0, 1]; running_var unbiased, as torch keeps it)."""

def batch_norm_forward_eval(
    x: _FloatArray, gain: _FloatArray, bias: _FloatArray, running_mean: _FloatArray,
    running_var: _FloatArray, y: _FloatArray, eps: float,
) -> None:
    """Batch norm with the running statistics: y (may be x)."""

def batch_norm_backward(
    dy: _FloatArray, xhat: _FloatArray, rstd: _FloatArray, gain: _FloatArray, dx: _FloatArray,
    d_gain: _FloatArray, d_bias: _FloatArray, accumulate: bool,
) -> None:
    """Batch norm's gradients in training: dx (may be dy), d_gain, d_bias."""

def dropout_mask(
    words: Sequence[int], has_spare: bool, spare: float, p: float, out: npt.NDArray[np.uint8]
) -> tuple[tuple[int, int, int, int], bool, float]:
    """A dropout mask (0 <= p < 1) into out (uint8, any shape, C-contiguous), drawn from the
    generator state (words, has_spare, spare) as the engine draws it; returns the state after."""

def dropout_forward(x: _FloatArray, mask: npt.NDArray[np.uint8], p: float, y: _FloatArray) -> None:
    """y = x ⊙ mask / (1 − p), any shape (y may be x); mask uint8 of x's size."""

def dropout_backward(dy: _FloatArray, mask: npt.NDArray[np.uint8], p: float, dx: _FloatArray) -> None:
    """dx = dy ⊙ mask / (1 − p) (dx may be dy)."""

def residual_add(x: _FloatArray, skip: _FloatArray, out: _FloatArray) -> None:
    """out = x + skip, all of one shape (out may be x or skip)."""

def sum_into_each(arrays: list[_FloatArray], start: int, stop: int) -> None:
    """Elements [start, stop) of every array become their sum across the arrays, in
    list order, in place (1-D, C-contiguous, writable, one dtype and length, apart)."""

def shard_prefix(shard_rows: list[int], rank: int, e: int) -> int:
    """How many of rank `rank`'s rows come among the first e rows of a sharded fit's
    merged order (every shard >= 1 row)."""

def schedule_factor(schedule: ScheduleConfig, t: int) -> float:
    """The lr multiplier of a schedule at update t (0-based)."""

# ---- the engine ---------------------------------------------------------------------

class _Network(Generic[_Float]):
    """One network, a list of layers (dense, layer_norm, batch_norm, activation,
    dropout, residual), over a flat parameter buffer (layer by layer: a dense
    layer's W then b, a norm layer's gain then bias), a flat gradient buffer of
    the same layout and a flat state buffer (batch norm's running mean and
    variance). Calls on one network run one at a time, except
    that readers (predict, evaluate, cache, snapshot) called during a fit from
    another thread or a signal handler run between two of its batches. A call
    that changes the network made from a signal handler on the thread running a
    fit raises RuntimeError."""

    @overload
    def __init__(self, layers: list[dict[str, object]], seed: int) -> None:
        """layers: the flat list, one dict per layer with "type" and what that type
        reads: "inputs", "outputs" (dense), "init", "activation", "eps", "momentum",
        "p", "skip_from" (residual: adds the input of that layer). Checked: widths
        chain, a dense layer, blocks that do not nest and keep their width."""
    @overload
    def __init__(self, sizes: list[int], activations: list[str], seed: int, inits: list[str] = ...) -> None:
        """A plain stack: sizes: inputs, hidden widths, outputs (each >= 1);
        activations: one name per dense layer, the output layer's last; seed: 0 <=
        seed < 2**64; inits: one scheme per layer (he_normal, he_uniform,
        xavier_normal, xavier_uniform, lecun_normal, lecun_uniform), empty for
        He-normal. Biases start at zero."""
    @property
    def dtype(self) -> np.dtype[_Float]: ...
    @property
    def parameter_count(self) -> int: ...
    @property
    def layers(self) -> list[dict[str, object]]:
        """One dict per layer: "type", "inputs", "outputs", "init", "activation",
        "eps", "momentum", "p", "skip_from", "weight_offset", "bias_offset" (a dense
        layer's W and b, a norm layer's gain and bias; -1 for none), "state_offset"
        (batch norm), "stage" (the pass that runs it: an activation right after a
        dense or norm layer runs in that layer's)."""
    @property
    def state(self) -> npt.NDArray[_Float]:
        """A writable 1-D view of the state buffer: each batch norm layer's running
        mean then running variance."""
    @property
    def sqrt_checkpoint(self) -> int:
        """The k of fit's checkpoint="sqrt": ⌈√blocks⌉."""
    def activation_memory(self, batch: int, checkpoint: int) -> int:
        """Bytes of the workspace a training step of `batch` rows keeps, with checkpoint k (0: none)."""
    @property
    def params(self) -> npt.NDArray[_Float]:
        """A writable 1-D view of the parameter buffer (no copy; keeps the network alive)."""
    @property
    def grads(self) -> npt.NDArray[_Float]:
        """A writable 1-D view of the gradient buffer, with the layout of params."""
    def forward(self, x: npt.NDArray[_Float]) -> npt.NDArray[_Float]:
        """x (B, inputs) -> a new (B, outputs) array; keeps the cache for backward."""
    def backward(self, x: npt.NDArray[_Float], d_out: npt.NDArray[_Float]) -> None:
        """Zeroes grads, then fills them from d_out = dL/dŷ (B, outputs); needs the
        cache of forward(x) just before."""
    def cache(self, layer: int) -> tuple[npt.NDArray[_Float], npt.NDArray[_Float]]:
        """Copies of (Z, A) of the pass that runs layer `layer` (its pre-activation
        and output; for an activation layer of its own, its input and output), each
        (B, outputs of that layer), from the last forward. ValueError before any
        forward, IndexError for a bad layer."""
    def zero_grad(self) -> None: ...
    def predict(self, x: npt.NDArray[_Float], out: npt.NDArray[_Float]) -> None:
        """out (n, outputs) = the network applied to x (n, inputs); the training cache is untouched."""
    def fit(
        self,
        x: npt.NDArray[_Float],
        y: npt.NDArray[_Float],
        epochs: int,
        batch_size: int,
        shuffle: bool,
        loss: str,
        huber_delta: float,
        optimizer: OptimizerConfig,
        schedule: ScheduleConfig | None,
        count_correct: bool,
        record_layer_norms: bool = False,
        checkpoint: int = 0,
        sample_weight: npt.NDArray[_Float] | None = None,
        rank: int = 0,
        ranks: int = 1,
        reduce: Callable[[npt.NDArray[_Float], npt.NDArray[np.float64]], None] | None = None,
        gradient_memory: npt.NDArray[_Float] | None = None,
        shard_rows: list[int] = ...,
        data_key: int = 0,
    ) -> dict[str, object]:
        """Trains in C++, the GIL released (batch_size 0 or >= n: full batch; y dense).
        Returns {"status", "epochs", "failed_epoch", "failed_batch", "reason",
        "loss", "grad_norm", "lr"[, "accuracy"][, "layer_grad_norm"]}: the arrays
        hold one value (a row of one per dense layer for "layer_grad_norm") per
        epoch (the first "epochs" are valid). checkpoint: keep every k-th block's
        input and recompute the rest (0: keep everything); the same bits either
        way. sample_weight (n,): the samples' weights (>= 0), each batch's loss their
        weighted mean. A pending signal (Ctrl-C) raises. Across ranks (rank of
        ranks): reduce(grads, figures) sums both in place across the ranks each
        step (grads empty: figures alone, batch norm's sums or a sharded fit's batch
        weights); gradient_memory (n_params,): where the gradient lives during the
        fit (the ranks' shared memory); shard_rows: every rank's row count when each
        passes its own rows (empty: every rank passes the same rows). On a device:
        the fit runs there (one process only); data_key (not 0) keeps x, y on the GPU
        for the next call with the same key, until release_device_data()."""
    def optimizer_step(
        self, optimizer: OptimizerConfig, schedule: ScheduleConfig | None
    ) -> tuple[float, float, bool, int]:
        """One update from grads: (grad_norm, lr, gradient_finite, parameters_kept)."""
    def reset_optimizer(self) -> None: ...
    def snapshot(
        self,
    ) -> tuple[npt.NDArray[_Float], str, int, list[npt.NDArray[_Float]], tuple[tuple[int, int, int, int], bool, float],
               npt.NDArray[_Float]]:
        """(params, optimizer-state rule, update count, state buffers, ((w0, w1, w2, w3),
        has_spare, spare), state), copies taken under one lock: a fit running on
        another thread is seen between two batches."""
    def restore(
        self,
        params: npt.ArrayLike,
        optimizer: OptimizerConfig | None,
        steps: int,
        buffers: Sequence[npt.ArrayLike],
        rng_words: Sequence[int],
        has_spare: bool,
        spare: float,
        state: npt.ArrayLike | None = None,
    ) -> None:
        """Checks every field (state: None keeps the running statistics) (params and each buffer (parameter_count,), finite in the
        network's dtype; 0 <= steps <= 2**62, 0 without an optimizer; as many buffers as
        the rule keeps; words in [0, 2**64), not all 0; spare finite), then applies
        them all under one lock, or raises and changes nothing."""
    def evaluate(
        self, x: npt.NDArray[_Float], y: npt.NDArray[_Float], loss: str, huber_delta: float, count_correct: bool,
        sample_weight: npt.NDArray[_Float] | None = None,
    ) -> tuple[float, float]:
        """(mean loss, predictions right) over (x, y), in chunks, weighted when given."""

    # ---- the device (fastmlp/cuda.hpp): fit, predict and evaluate run there --------------
    def to_device(self, mask_seed: int = 0) -> None:
        """Copies the buffers to the GPU (RuntimeError, saying why, without CUDA or a GPU);
        mask_seed keys dropout's masks there (the network's seed)."""
    def to_host(self) -> None:
        """The device's buffers back to the host, and the GPU's memory freed."""
    @property
    def device(self) -> Literal["cpu", "cuda"]: ...
    def sync_host(self) -> None:
        """The host buffers (what params, grads, state show) brought up to date."""
    def touch(self) -> None:
        """Says the host buffers were written from Python: the device takes them before its next call."""
    def release_device_data(self) -> None:
        """Frees the training data a device fit kept (data_key)."""
    def fit_path(self, batch: int, loss: str) -> Literal["fused", "layers"]:
        """Which path a device fit of `batch` rows takes (the network on a device)."""

class Network32(_Network[np.float32]): ...
class Network64(_Network[np.float64]): ...

# ---- threads and build ----------------------------------------------------------------

def gemm_kernel() -> str:
    """The GEMM kernel in use: "avx512", "avx2" or "portable"."""

def gemm_available_kernels() -> list[str]:
    """The GEMM kernels this build has and this CPU can run, best first."""

def set_gemm_kernel(name: str) -> None:
    """Forces a GEMM kernel ("auto": the best); ValueError for one this CPU or build cannot run."""

class _GemmBlocking(TypedDict):
    mr: int
    nr: int
    kc: int
    nc: int
    prefetch: bool

_GemmConfig = TypedDict(
    "_GemmConfig",
    {"name": str, "kernel": str, "source": str, "reason": str,
     "float32": _GemmBlocking, "float64": _GemmBlocking},
)

def gemm_config() -> _GemmConfig:
    """The GEMM configuration in use (a new dict each call)."""

def gemm_configs() -> list[str]:
    """The configuration names set_gemm_config accepts on this CPU."""

def set_gemm_config(spec: str) -> None:
    """Forces a configuration: "auto", a name, and/or kc=N, nc=N, prefetch=0|1; ValueError names a bad spec."""

class _CacheInfo(TypedDict):
    level: int
    unified: bool
    size: int
    ways: int
    line: int
    sets: int
    shared_by: int

class _CpuInfo(TypedDict):
    vendor: str
    family: int
    model: int
    stepping: int
    brand: str
    caches: list[_CacheInfo]
    cache_source: str
    features: list[str]

def cpu_info() -> _CpuInfo:
    """What CPUID (or sysfs) reports about this CPU (a new dict each call)."""

def _decode_cpuid(
    table: dict[tuple[int, int], tuple[int, int, int, int]], xcr0: int | None = None
) -> _CpuInfo:
    """cpu_info's decoding of a recorded CPUID dump (missing leaves read as zeros); for tests."""

def _read_sysfs_caches(directory: str) -> list[_CacheInfo]:
    """The caches listed under a sysfs-like directory (index0, index1, ...); for tests."""

class _CacheGeometry(TypedDict):
    size: int
    ways: int
    line: int
    sets: int

def _gemm_model_blocking(l1: _CacheGeometry, l2: _CacheGeometry, mr: int, nr: int, scalar_size: int) -> _GemmBlocking:
    """The analytical model's blocking for a tile and two caches; ValueError for impossible caches."""

def get_num_threads() -> int: ...
def set_num_threads(n: int) -> None:
    """Sets the thread count of the kernels (n >= 1), for the whole process."""

class _FmaPeak(TypedDict):
    dtype: str
    threads: int
    isa: str
    lanes: int
    chains: int
    gflops: float
    median_gflops: float
    trials: list[float]

def fma_peak(dtype: str = "float32", threads: int = 1, seconds: float = 0.2, trials: int = 3) -> _FmaPeak:
    """The FMA throughput peak in GFLOP/s of `threads` threads running independent FMA chains on
    vector registers (the best of `trials` runs of about `seconds`); the GIL is released."""

class _SpinProbe(TypedDict):
    threads: int
    seconds: float
    stolen: float
    per_thread: list[float]
    gaps: int
    longest_gap_us: float

def spin_probe(threads: int = 1, seconds: float = 0.2, gap_us: float = 20.0) -> _SpinProbe:
    """The share of time stolen from `threads` spinning threads over `seconds`: gaps longer than
    `gap_us` between two clock reads (another process or the hypervisor ran there)."""

class _CudaInfo(TypedDict):
    built: bool
    devices: int
    name: str
    capability: str
    memory: int
    multiprocessors: int
    runtime_version: int
    driver_version: int
    cublas: str
    error: str

def cuda_info() -> _CudaInfo:
    """The CUDA backend of this build and the GPU it sees ("error": why none is usable, or "").
    A CUDA build also has the submodule `cuda`: its kernels on NumPy arrays (tests)."""

class _BuildInfo(TypedDict):
    compiler: str
    build_type: str
    build_flags: str
    architecture: str
    cpu_features: list[str]
    gemm_kernel: str

def build_info() -> _BuildInfo:
    """How this extension was built and what the CPU offers (a new dict each call)."""
