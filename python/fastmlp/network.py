"""Network: a dense network trained by backpropagation in fastmlp's C++ engine.

All parameters live in one flat buffer, layer by layer (W_0, b_0, W_1, b_1, ...),
and their gradients in a second one with the same layout. ``weights``,
``biases``, ``params`` and ``grads`` are NumPy views into those buffers: writing
to them changes the network, and nothing is copied.

On a GPU (``device="cuda"``, ``net.to("cuda")``) the buffers live on the device
and the host's stay their mirror: the same properties then return copies, read
from the device, and ``net.weights[i] = array`` (each list's item assignment)
still writes into the network. Inside this module every read of the host buffers
is preceded by ``_sync_host()`` and every write followed by ``_host_changed()``;
both do nothing on the CPU.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from . import _core
from . import architecture as _arch
from ._targets import prepare_targets
from ._validation import (
    as_finite,
    as_float_dtype,
    as_numeric_array,
    check_choice,
    check_int,
    check_positive_float,
    check_real,
    check_rng_state,
    check_sample_weight,
    check_samples,
    check_targets,
)
from .callbacks import EarlyStopping, ProgressPrinter
from .optimizers import SGD, Optimizer

__all__ = ["Network", "History", "ACTIVATIONS", "LOSSES", "INITS", "INIT_SCHEMES", "DEVICES"]

ACTIVATIONS = _core.ACTIVATIONS
LOSSES = _core.LOSSES
CLASSIFICATION_LOSSES = ("cross_entropy", "binary_cross_entropy")
_HEADS = {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}
INIT_SCHEMES = _core.INIT_SCHEMES
_INIT_ALIASES = {"he": "he_normal", "xavier": "xavier_normal", "glorot": "xavier_normal",
                 "glorot_normal": "xavier_normal", "glorot_uniform": "xavier_uniform", "lecun": "lecun_normal"}
INITS = ("auto",) + INIT_SCHEMES + tuple(_INIT_ALIASES)
SETTINGS = ("loss", "huber_delta", "seed")
DEVICES = ("cpu", "cuda")  # where a network's buffers live and it trains (Network.to)
_OLD_SETTINGS = ("activation", "output_activation", "init")  # pickles of the layer sizes (before issue 11)
MAX_COUNT = 2**62  # the largest epoch count, batch size, layer size or restored update count (int64 with room)
MAX_PARAMS = 2**48  # the largest parameter count: far beyond any memory, far from int64's end
SILENT_CHUNK = 1 << 16  # epochs per engine call in an unwatched fit (bounds the per-epoch records)
RESUME_KEY = "fastmlp.fit"  # a checkpoint's metadata entry: how far its fit had come


def resolve_init(init: str, activation: str) -> str:
    """The scheme a layer gets: "auto" is Xavier-normal for tanh and sigmoid
    layers and He-normal for every other (the relu family, gelu, swish, linear)."""
    init = check_choice(init, "init", INITS)
    if init == "auto":
        return "xavier_normal" if activation in ("tanh", "sigmoid") else "he_normal"
    return _INIT_ALIASES.get(init, init)


class History:
    """What a fit recorded, one value per epoch under each key of ``history``:
    "loss", "grad_norm" (mean global gradient norm of the epoch's updates, before
    norm clipping) and "lr" (of the epoch's last update); "accuracy" for
    classifiers; "val_loss" (and "val_accuracy") with validation data;
    "layer_grad_norms" (a list per epoch, one norm per layer) when the fit was
    asked to record them. ``epoch``
    numbers the epochs of this fit from 0; ``stopped_epoch`` is the epoch after
    which early stopping or a callback ended it (None when it ran to the end), and
    ``best_epoch`` the epoch whose weights early stopping kept."""

    def __init__(self):
        self.history: dict[str, list[float]] = {"loss": []}
        self.epoch: list[int] = []
        self.stopped_epoch: int | None = None
        self.best_epoch: int | None = None

    def _append(self, logs: dict) -> None:
        self.epoch.append(len(self.epoch))
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value if isinstance(value, list) else float(value))

    def __getitem__(self, key: str) -> list[float]:
        return self.history[key]

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class ParameterList(list):
    """A list of views into the parameter buffer. Assigning ``lst[i] = array``
    copies the values into the buffer (shapes must match) instead of unlinking
    the entry from the network."""

    def _entry(self, i, value) -> tuple[np.ndarray, np.ndarray]:
        """The entry ``lst[i]`` and ``value`` as an array of its shape (TypeError for a slice,
        ValueError for another shape)."""
        if isinstance(i, slice):
            raise TypeError("assign parameters one layer at a time: lst[i] = array")
        entry = list.__getitem__(self, i)
        value = np.asarray(value)
        if value.shape != entry.shape:
            raise ValueError(f"parameter {i}: expected shape {entry.shape}, got {value.shape}")
        return entry, value

    def __setitem__(self, i, value):
        view, value = self._entry(i, value)
        view[...] = value


class _ParameterCopies(ParameterList):
    """A network on a GPU: copies of its host views (``views``), read from the device
    when the list was made. Assigning ``lst[i] = array`` still writes into the
    network (the host view, brought up to date first, then marked changed so the
    device gets it before its next call) and into the copy."""

    def __init__(self, net: "Network", views: list[np.ndarray]):
        self._net, self._views = net, views
        net._sync_host()
        super().__init__(view.copy() for view in views)

    def __setitem__(self, i, value):
        copy, value = self._entry(i, value)
        self._net._sync_host()  # the rest of the host buffers current before the whole is uploaded
        self._views[i][...] = value
        self._net._host_changed()
        copy[...] = value

    def __reduce__(self):  # the copies, not the network
        return ParameterList, (list(self),)


def _is_layer_sizes(value) -> bool:
    """Whether a pickled network's first field is layer sizes (the older form), not a layer list."""
    return isinstance(value, (tuple, list)) and len(value) > 0 and all(
        isinstance(size, (numbers.Integral, np.integer)) and not isinstance(size, (bool, np.bool_)) for size in value)


def _output_activation(loss: str, output_activation: str) -> str:
    """The output layer's activation: a classifier's is linear (the loss applies the head)."""
    head = _HEADS.get(loss)
    if head is not None:
        if output_activation not in ("linear", head):
            raise ValueError(
                f"output_activation: with loss={loss!r} the output layer is linear and the loss "
                f"applies the {head}; use 'linear' or {head!r}, got {output_activation!r}"
            )
        return "linear"
    return check_choice(output_activation, "output_activation", ACTIVATIONS)


def _parse_layer_sizes(layer_sizes) -> tuple[int, ...]:
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__"):
        raise TypeError(
            f"layer_sizes: expected a sequence of integers such as [1, 64, 32, 1], got {layer_sizes!r}"
        )
    if len(layer_sizes) < 2:
        raise ValueError(
            f"layer_sizes: expected at least two sizes (inputs and outputs), got {list(layer_sizes)!r}"
        )
    sizes = tuple(check_int(size, f"layer_sizes[{i}]", minimum=1, maximum=MAX_COUNT)
                  for i, size in enumerate(layer_sizes))
    n_params = sum(inputs * outputs + outputs for inputs, outputs in zip(sizes[:-1], sizes[1:]))
    if n_params > MAX_PARAMS:
        raise ValueError(f"layer_sizes: {list(sizes)} makes {n_params} parameters, more than any memory holds "
                         f"(the limit is 2**48 = {MAX_PARAMS})")
    return sizes


@dataclass(frozen=True)
class _FitPlan:
    """A fit's arguments, checked and converted: what the epochs run on."""

    X: np.ndarray
    y: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    epochs: int
    batch: int  # 0: full batch
    shuffle: bool
    optimizer: Optimizer
    config: _core.OptimizerConfig  # the optimizer's and its schedule's, as the engine reads them
    schedule: _core.ScheduleConfig | None
    verbose: int
    early_stopping: EarlyStopping | None
    on_epoch_end: Callable[[int, dict], object] | None
    record_layer_norms: bool = False
    checkpoint: int = 0  # keep every k-th block's input (0: everything)
    w: np.ndarray | None = None  # the training samples' weights (None: all 1)
    w_val: np.ndarray | None = None  # the validation samples' weights
    comm: object = None  # a fastmlp.distributed.Communicator: data-parallel across its ranks
    gradient_memory: list | None = None  # [where the engine keeps the gradient (comm's), or None], emptied after
    checkpoint_every: int = 0  # write a checkpoint after every k-th epoch (0: none)
    checkpoint_path: str | None = None
    resume: tuple | None = None  # (the checkpoint's state, its progress) to continue from
    resume_from: str | None = None  # the checkpoint's path
    # Sharded (fit's shard=True across ranks): each rank its own rows.
    shard_options: dict | None = None  # what the ranks must agree on beyond the data's shapes (None: not sharded)
    class_weight: object = None  # until _plan_shards: "balanced" or the per-class weights, not yet applied
    shard_rows: tuple | None = None  # every rank's training rows, in rank order
    fingerprint: dict | None = None  # the fit's agreement and every rank's data digests (its checkpoints)

    @property
    def watched(self) -> bool:
        """Whether Python runs after every epoch (printing, validation, early stopping, a callback)."""
        return bool(self.verbose or self.X_val is not None or self.early_stopping is not None
                    or self.on_epoch_end is not None)


class Network:
    """A dense network: Z_l = A_{l-1} · W_lᵀ + b_l, A_l = f_l(Z_l), with residual
    blocks, layer or batch norm and dropout when asked for. Its layers are data:
    :attr:`architecture` lists them and :meth:`from_architecture` builds from
    such a list.

    Parameters
    ----------
    layer_sizes : sequence of int
        Inputs, hidden widths, outputs, e.g. ``[1, 64, 32, 1]``; each >= 1.
    activation : str or sequence of str
        Activation of the hidden layers, one name or one per hidden layer:
        linear, relu, leaky_relu, sigmoid, tanh, swish, gelu.
    residual : bool
        Residual blocks: every hidden block whose input and output widths agree
        computes ``out = in + block(in)`` (He et al. 2016's identity shortcut;
        a block whose widths differ has none). See :mod:`fastmlp.architecture`.
    norm : None, "layer" or "batch"
        A layer norm or batch norm (learnable gain 1 and bias 0 at first, eps
        1e-5, batch norm's momentum 0.1, as torch's) in every hidden block,
        after the dense layer; with ``residual`` also one before the output
        layer. Batch norm uses the batch's statistics in ``forward``,
        ``backward`` and ``fit`` and its running ones in ``predict``,
        ``evaluate`` and ``score``.
    dropout : float
        Inverted dropout with this probability after every hidden activation,
        active in training only (``forward``, ``fit``); its masks come from the
        network's generator, so the same seed drops the same units.
    output_activation : str
        Activation of the last layer: "linear" for regression. A classifier's
        output layer is linear (its outputs are logits) and the loss applies the
        head; "softmax" (cross_entropy) or "sigmoid" (binary_cross_entropy) may
        be named here to say so.
    loss : str
        "mse": mean over samples and outputs of (ŷ − y)² (torch.nn.MSELoss);
        "huber": mean Huber loss with ``huber_delta`` (torch.nn.HuberLoss);
        "cross_entropy": softmax over the outputs and cross-entropy, fused and
        stable, mean over samples (torch.nn.CrossEntropyLoss); targets are
        class labels 0..n_outputs-1 or one-hot rows;
        "binary_cross_entropy": a sigmoid per output, from logits, mean over
        samples and outputs (torch.nn.BCEWithLogitsLoss); targets 0/1.
        With a classification loss, ``predict`` gives classes and
        ``predict_proba`` probabilities.
    init : str or sequence of str
        Initial weights, one scheme or one per layer: "auto" (He-normal for the
        relu family, gelu, swish and linear layers, Xavier-normal for tanh and
        sigmoid layers), he_normal, he_uniform, xavier_normal, xavier_uniform
        (also "glorot_*"), lecun_normal, lecun_uniform. Biases start at zero.
    dtype : "float32" or "float64"
        float32 is the fast default; float64 for gradient checks.
    seed : int or None
        Seeds the network's generator (initial weights, shuffling). None draws
        a fresh seed; ``net.seed`` tells which.
    device : "cpu" or "cuda"
        Where the network trains and predicts: "cuda" moves it to the GPU at
        once (:meth:`to` tells what that changes; a RuntimeError says why when
        this fastmlp was built without CUDA or sees no GPU).

    Notes
    -----
    Inputs are read where they lie when their layout allows: a C-contiguous
    array of the network's dtype, read-only ones included (``np.load(...,
    mmap_mode="r")``, ``np.frombuffer``, joblib's memmaps), is used without a
    copy by ``predict``, ``forward``, ``evaluate``, ``score`` and ``fit``.

    Threads: one network may be used from several threads; its engine holds a
    lock for each call. During a ``fit`` running in another thread, a
    ``predict`` (``evaluate``, ``decision_function``) gets in between two
    batches rather than waiting for the whole fit, and sees the weights after
    some update of that fit, not a half-written one. ``pickle``, ``copy`` and
    ``astype`` during a fit take one consistent snapshot between two batches:
    the weights, the optimizer state and the generator state of the same
    moment. Training one network from two threads at once (``fit``,
    ``step``, ``backward``) is safe but interleaves the updates; give each
    thread its own ``copy()`` instead.
    """

    def __init__(
        self,
        layer_sizes,
        activation="relu",
        *,
        residual: bool = False,
        norm: str | None = None,
        dropout: float = 0.0,
        output_activation: str = "linear",
        loss: str = "mse",
        huber_delta: float = 1.0,
        init="auto",
        dtype="float32",
        seed: int | None = None,
        device: str = "cpu",
    ):
        sizes = _parse_layer_sizes(layer_sizes)
        n_layers = len(sizes) - 1
        if isinstance(activation, str):
            hidden = [check_choice(activation, "activation", ACTIVATIONS)] * (n_layers - 1)
        elif hasattr(activation, "__len__"):
            if len(activation) != n_layers - 1:
                raise ValueError(
                    f"activation: expected one name or {n_layers - 1} names (one per hidden layer), "
                    f"got {len(activation)}"
                )
            hidden = [check_choice(a, f"activation[{i}]", ACTIVATIONS) for i, a in enumerate(activation)]
        else:
            raise TypeError(f"activation: expected a name such as 'relu', got {activation!r}")
        if not isinstance(residual, (bool, np.bool_)):
            raise TypeError(f"residual: expected True or False, got {residual!r}")
        if norm is not None:
            norm = check_choice(norm, "norm", _arch.NORMS)
        dropout = check_real(dropout, "dropout", 0.0, 1.0, high_open=True)
        loss = check_choice(loss, "loss", LOSSES)
        output_activation = _output_activation(loss, output_activation)
        if isinstance(init, str):
            inits = [init] * n_layers
        elif hasattr(init, "__len__") and len(init) == n_layers:
            inits = list(init)
        else:
            raise ValueError(f"init: expected one scheme or {n_layers} (one per layer), got {init!r}")
        activations = tuple(hidden) + (output_activation,)
        schemes = [resolve_init(i, a) for i, a in zip(inits, activations)]
        layers = _arch.expand(sizes, hidden, output_activation, schemes, residual=bool(residual), norm=norm,
                              dropout=dropout)
        self._build(layers, loss, huber_delta, dtype, seed, device)

    @classmethod
    def from_architecture(cls, architecture, *, loss: str = "mse", huber_delta: float = 1.0, dtype="float32",
                          seed: int | None = None, device: str = "cpu") -> "Network":
        """A network from a layer list (see :mod:`fastmlp.architecture`), such as
        another network's :attr:`architecture`; with the same ``seed`` it starts
        with the same parameters. A dense layer's ``init`` may be "auto" (or
        left out): its block's activation chooses, as in the constructor."""
        loss = check_choice(loss, "loss", LOSSES)
        layers = _arch.normalize(architecture, resolve_init)
        net = cls.__new__(cls)
        net._build(layers, loss, huber_delta, dtype, seed, device)
        return net

    def _build(self, layers: list[dict], loss: str, huber_delta, dtype, seed, device: str = "cpu") -> None:
        """Builds the engine's network from a normalized layer list, on the CPU, then
        moves it to ``device``."""
        device = check_choice(device, "device", DEVICES)
        self._device = "cpu"
        self._loss = loss
        self._metadata: dict = {}
        self._huber_delta = check_positive_float(huber_delta, "huber_delta")
        self._dtype = as_float_dtype(dtype)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy) % (1 << 63)  # type: ignore[arg-type]
        self._seed = check_int(seed, "seed", minimum=0, maximum=2**64 - 1)
        flat = _arch.flatten(layers)
        blocks = _arch.dense_blocks(flat)
        self._sizes = (flat[blocks[0][0]]["inputs"],) + tuple(flat[i]["outputs"] for i, _, _ in blocks)
        self._activations = tuple(name for _, name, _ in blocks)
        self._schemes = tuple(flat[i]["init"] for i, _, _ in blocks)
        self._blocks = blocks
        n_params, _ = _arch.sizes(flat)
        if n_params > MAX_PARAMS:
            raise ValueError(f"architecture: {n_params} parameters, more than any memory holds "
                             f"(the limit is 2**48 = {MAX_PARAMS})")
        if self.is_classifier:
            head = _HEADS[loss]
            if self._activations[-1] != "linear" or flat[-1]["type"] not in ("dense",):
                raise ValueError(f"architecture: with loss={loss!r} the network must end with a linear dense "
                                 f"layer (its outputs are logits; the loss applies the {head}), "
                                 f"but it ends with {flat[-1]['type']} {self._activations[-1]!r}")
        if loss == "cross_entropy" and self._sizes[-1] < 2:
            raise ValueError("loss: cross_entropy needs at least 2 outputs (one per class); "
                             "for a single output use binary_cross_entropy")
        core_class = _core.Network32 if self._dtype == np.float32 else _core.Network64
        self._core = core_class(flat, self._seed)
        self._layers = self._core.layers
        self._make_views()
        self._last_batch: int | None = None
        self._optimizer: Optimizer | None = None
        if device != "cpu":
            self.to(device)

    def _make_views(self) -> None:
        params, grads, state = self._core.params, self._core.grads, self._core.state
        self._params, self._grads, self._state = params, grads, state
        w, b, gw, gb, gains, norm_biases, means, variances = [], [], [], [], [], [], [], []
        for layer in self._layers:
            kind, inputs, outputs = layer["type"], layer["inputs"], layer["outputs"]
            w_off, b_off = layer["weight_offset"], layer["bias_offset"]
            if kind == "dense":
                w.append(params[w_off : w_off + inputs * outputs].reshape(outputs, inputs))
                b.append(params[b_off : b_off + outputs])
                gw.append(grads[w_off : w_off + inputs * outputs].reshape(outputs, inputs))
                gb.append(grads[b_off : b_off + outputs])
            elif kind in ("layer_norm", "batch_norm"):
                gains.append(params[w_off : w_off + inputs])
                norm_biases.append(params[b_off : b_off + inputs])
                if kind == "batch_norm":
                    s_off = layer["state_offset"]
                    means.append(state[s_off : s_off + inputs])
                    variances.append(state[s_off + inputs : s_off + 2 * inputs])
        self._weights, self._biases = ParameterList(w), ParameterList(b)
        self._grad_weights, self._grad_biases = gw, gb
        self._norm_gains, self._norm_biases = ParameterList(gains), ParameterList(norm_biases)
        self._running_means, self._running_vars = ParameterList(means), ParameterList(variances)

    # ---- description ---------------------------------------------------------
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self._sizes

    @property
    def activations(self) -> tuple[str, ...]:
        """Activation of every dense layer's block, the output layer's last (a classifier's is linear)."""
        return self._activations

    @property
    def architecture(self) -> list[dict]:
        """The layer list, as plain JSON-able dicts (see :mod:`fastmlp.architecture`);
        ``Network.from_architecture(net.architecture, seed=net.seed)`` builds the same network."""
        return _arch.nest(self._layers)

    @property
    def loss(self) -> str:
        return self._loss

    @property
    def huber_delta(self) -> float:
        return self._huber_delta

    @property
    def is_classifier(self) -> bool:
        return self._loss in CLASSIFICATION_LOSSES

    @property
    def init(self) -> tuple[str, ...]:
        """The initialisation scheme of every layer (with "auto" resolved)."""
        return self._schemes

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def n_inputs(self) -> int:
        return self._sizes[0]

    @property
    def n_outputs(self) -> int:
        return self._sizes[-1]

    @property
    def n_params(self) -> int:
        return int(self._params.size)

    @property
    def optimizer(self) -> Optimizer | None:
        """The optimizer of the last fit, partial_fit or step (its state lives in the network)."""
        return self._optimizer

    # ---- device -----------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Where the network lives: "cpu", or "cuda" after ``to("cuda")`` (or ``device="cuda"``)."""
        return self._device

    def to(self, device: str) -> "Network":
        """Moves the network to ``device`` and returns it (``net.to("cuda").fit(...)``).

        "cuda": its buffers (parameters, batch norm's running statistics, the
        optimizer's state) are copied to the GPU, and ``fit``, ``predict``,
        ``decision_function``, ``predict_proba``, ``evaluate`` and ``score`` run
        there. Every other method (``forward``, ``backward``, ``step``,
        ``diagnose``, ...) runs on the CPU, on the host's copy, which is brought
        up to date first. ``params``, ``grads``, ``state``, ``weights``,
        ``biases``, ``norm_gains``, ``norm_biases``, ``running_means`` and
        ``running_vars`` then return copies, not views (``net.weights[i] = array``
        still writes into the network). Raises RuntimeError, saying why, when
        this fastmlp was built without CUDA or no GPU can be used.

        "cpu": the device's values are copied back and the GPU's memory freed.
        ``copy``, ``astype``, pickling and ``fm.load`` give a network on the CPU
        whatever the original's device: ``.to("cuda")`` moves it."""
        device = check_choice(device, "device", DEVICES)
        if device != self._device:
            if device == "cuda":
                from ._cuda import load_cublas  # here: a CPU network imports nothing of the GPU's

                load_cublas()
                self._core.to_device(self._seed)
            else:
                self._core.to_host()
            self._device = device
        return self

    def _sync_host(self) -> None:
        """On a GPU: brings the host buffers (what the views see) up to date before
        Python reads them. Nothing on the CPU."""
        if self._device != "cpu":
            self._core.sync_host()

    def _host_changed(self) -> None:
        """On a GPU: says Python wrote the host buffers, so the device takes them
        before its next call. Nothing on the CPU."""
        if self._device != "cpu":
            self._core.touch()

    def _copies(self, views: list[np.ndarray]) -> ParameterList:
        """``views`` on the CPU; on a GPU, copies whose item assignment writes through."""
        return views if self._device == "cpu" else _ParameterCopies(self, views)

    def _copy(self, buffer: np.ndarray) -> np.ndarray:
        """``buffer`` on the CPU; on a GPU, a copy of it, read from the device."""
        if self._device == "cpu":
            return buffer
        self._core.sync_host()
        return buffer.copy()

    # ---- parameters (views, no copies; copies on a GPU) ---------------------------------
    @property
    def params(self) -> np.ndarray:
        """All parameters, one flat view: W_0, b_0, W_1, b_1, ... (on a GPU: a copy)."""
        return self._copy(self._params)

    @property
    def grads(self) -> np.ndarray:
        """All gradients, a flat view with the layout of ``params`` (on a GPU: a copy)."""
        return self._copy(self._grads)

    @property
    def weights(self) -> list[np.ndarray]:
        """Per-layer weight views, W_l of shape (outputs, inputs) (on a GPU: copies;
        ``net.weights[l] = W`` writes into the network either way)."""
        return self._copies(self._weights)

    @property
    def biases(self) -> list[np.ndarray]:
        """Per-layer bias views, b_l of shape (outputs,) (on a GPU: copies, as ``weights``)."""
        return self._copies(self._biases)

    @property
    def norm_gains(self) -> list[np.ndarray]:
        """The gain (γ, initially 1) of every layer norm and batch norm layer, in order: views (width,)
        (on a GPU: copies, as ``weights``)."""
        return self._copies(self._norm_gains)

    @property
    def norm_biases(self) -> list[np.ndarray]:
        """The bias (β, initially 0) of every layer norm and batch norm layer, in order: views (width,)
        (on a GPU: copies, as ``weights``)."""
        return self._copies(self._norm_biases)

    @property
    def running_means(self) -> list[np.ndarray]:
        """Every batch norm layer's running mean (initially 0), views into ``state`` (on a GPU:
        copies, as ``weights``)."""
        return self._copies(self._running_means)

    @property
    def running_vars(self) -> list[np.ndarray]:
        """Every batch norm layer's running variance (unbiased, initially 1), views into ``state``
        (on a GPU: copies, as ``weights``)."""
        return self._copies(self._running_vars)

    @property
    def state(self) -> np.ndarray:
        """The state that is not trained by gradients, one flat view: every batch
        norm layer's running mean then running variance (on a GPU: a copy)."""
        return self._copy(self._state)

    def __repr__(self) -> str:
        kinds = sorted({layer["type"] for layer in self._layers} - {"dense", "activation"})
        extra = f", layers with {'/'.join(kinds)}" if kinds else ""
        device = "" if self._device == "cpu" else f", device={self._device!r}"
        return (
            f"Network({list(self._sizes)}, activations={list(self._activations)}{extra}, loss={self._loss!r}, "
            f"dtype={self._dtype.name!r}, seed={self._seed}{device})"
        )

    def _targets(self, y, n_samples: int, name: str = "y") -> np.ndarray:
        return prepare_targets(y, name, n_samples, self.n_outputs, self._loss, self._dtype)

    # ---- the article's steps ----------------------------------------------------------
    def forward(self, X) -> np.ndarray:
        """Forward pass (n_samples, n_outputs), raw outputs (a classifier's logits);
        keeps the cache that backward uses. Training mode, as ``fit``: batch
        norm uses (and moves its running statistics by) the batch's statistics,
        and dropout draws fresh masks; ``predict`` is the eval-mode pass."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        out = self._core.forward(X)
        self._last_batch = X.shape[0]
        return out

    def backward(self, X, y, y_pred):
        """Backward pass after ``forward(X)``: fills ``grads`` with ∂L/∂params for
        this batch (replacing what was there) and returns ``(grads_w, grads_b)``,
        lists of views into it (on a GPU: copies)."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        y = self._targets(y, X.shape[0])
        y_pred = check_targets(y_pred, "y_pred", X.shape[0], self.n_outputs, self._dtype)
        self._check_cached(X.shape[0], "backward")
        d_output = np.empty_like(y_pred)
        _core.loss(self._loss, y_pred, y, d_output, self._huber_delta)
        return self._backpropagate(X, d_output)

    def backward_output(self, X, d_output):
        """Backward pass after ``forward(X)`` from a given ∂L/∂(output),
        ``d_output`` of shape (n_samples, n_outputs), for a loss of your own:
        fills ``grads`` (replacing what was there) and returns ``(grads_w,
        grads_b)`` as :meth:`backward` does."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        d_output = check_targets(d_output, "d_output", X.shape[0], self.n_outputs, self._dtype)
        self._check_cached(X.shape[0], "backward_output")
        return self._backpropagate(X, d_output)

    def _check_cached(self, n_samples: int, caller: str) -> None:
        if self._last_batch != n_samples:
            cached = self._last_batch if self._last_batch is not None else "no"
            raise ValueError(f"{caller}: call forward(X) on this batch first (the cache holds "
                             f"{cached} samples, X has {n_samples})")

    def _backpropagate(self, X: np.ndarray, d_output: np.ndarray):
        self._core.backward(X, d_output)  # on a GPU too it runs on the host's buffers: they are current
        if self._device != "cpu":
            return [g.copy() for g in self._grad_weights], [g.copy() for g in self._grad_biases]
        return list(self._grad_weights), list(self._grad_biases)

    def layer_cache(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """``(Z, A)`` of dense layer ``layer``'s block (0 is the first hidden
        layer, the last is the output layer) from the last ``forward``: copies of
        the input and output of the block's activation (with a norm, Z is the
        normalised value), each (n_samples, layer_sizes[layer + 1]); for a
        block without activation both are the dense layer's output."""
        layer = check_int(layer, "layer", minimum=0, maximum=len(self._sizes) - 2)
        if self._last_batch is None:
            raise ValueError("layer_cache: no forward pass to read; call forward(X) first")
        return self._core.cache(self._blocks[layer][2])

    def diagnose(self, X, y):
        """Why the network does (not) learn: one forward/backward pass on (X, y) in
        training mode, and a per-layer report (a :class:`fastmlp.diagnosis.Diagnosis`):
        weight and gradient norms and their ratio, activation mean and std, the
        fraction of dead (relu family) or saturated (sigmoid, tanh) units, and a
        verdict per layer: "exploding", "vanishing", "dead", "saturated" or "ok"
        (thresholds in ``fastmlp.diagnosis.THRESHOLDS``). It prints as a table,
        ``to_dict()`` gives plain data and ``plot()`` draws the gradient norm by
        layer. The network is left as it was (weights, batch norm's running
        statistics, the generator that draws dropout masks and shuffles); like
        :meth:`backward`, it leaves this batch's gradients in ``grads``."""
        from .diagnosis import diagnose

        before = self._snapshot()  # the pass moves the running statistics and draws masks
        try:
            return diagnose(self, X, y)
        finally:
            self._restore(_check_state(self, *before))

    def zero_grad(self) -> None:
        """Sets ``grads`` to zero (``backward`` overwrites them anyway)."""
        self._core.zero_grad()

    def step(self, optimizer: Optimizer | None = None) -> dict:
        """Applies one update from the current ``grads`` with ``optimizer`` (the
        last one used when None), continuing its state. Returns
        ``{"grad_norm": ..., "lr": ...}``."""
        optimizer = self._resolve_optimizer(optimizer)
        grad_norm, lr, finite, kept = optimizer._apply(self._core)
        if not finite:
            raise FloatingPointError("step: the gradient is not finite; no parameter was changed")
        if kept:
            raise FloatingPointError(f"step: the update would make {kept} parameters non-finite; they kept their values")
        return {"grad_norm": grad_norm, "lr": lr}

    def reset_optimizer(self) -> None:
        """Clears the optimizer's state (momentum, Adam's moments, the update count)."""
        self._core.reset_optimizer()

    def _resolve_optimizer(self, optimizer, remember: bool = True) -> Optimizer:
        """The optimizer to use (the last one when None), checked; remembered as
        ``self.optimizer`` unless told not to (fit remembers it once all its
        arguments have passed their checks)."""
        if optimizer is None:
            optimizer = self._optimizer if self._optimizer is not None else SGD()
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected an optimizer such as fm.SGD(lr=0.01) or fm.Adam(), got {optimizer!r}")
        if optimizer.lr > float(np.finfo(self._dtype).max):
            raise ValueError(f"lr: {optimizer.lr!r} is not finite in the network's dtype {self._dtype.name}")
        if remember:
            self._optimizer = optimizer
        return optimizer

    # ---- training --------------------------------------------------------------------
    def fit(
        self,
        X,
        y,
        epochs: int = 1,
        batch_size: int | None = None,
        optimizer: Optimizer | None = None,
        shuffle: bool = True,
        verbose: int = 0,
        *,
        validation_split: float = 0.0,
        validation_data=None,
        early_stopping: EarlyStopping | bool | None = None,
        on_epoch_end=None,
        record_layer_norms: bool = False,
        checkpoint: int | str | None = None,
        sample_weight=None,
        class_weight=None,
        comm=None,
        shard: bool = False,
        checkpoint_every: int | None = None,
        checkpoint_path=None,
        resume_from=None,
    ) -> History:
        """Trains from the current weights (and the optimizer's current state).

        Every epoch runs in C++ with the GIL released: batching, seeded
        shuffling, forward, loss, backward, clipping, schedule and update. Python
        runs between epochs only, and only when asked to (verbose, validation,
        early stopping, a callback); otherwise the engine runs 65536 epochs a call.

        batch_size None means full batch. Each epoch's loss (and accuracy) is
        measured on each batch before its update (the article's convention).
        ``validation_split`` holds out that fraction of the samples, the last
        ones, before any shuffling (Keras's rule); ``validation_data=(X, y)``
        gives a set explicitly. ``early_stopping`` is an
        :class:`~fastmlp.EarlyStopping` (True for the defaults).
        ``on_epoch_end(epoch, logs)`` is called after every epoch with that
        epoch's figures; returning True stops the fit. ``verbose``: 0 silent,
        1 one line per epoch, 2 a progress bar. ``record_layer_norms=True`` adds
        ``history["layer_grad_norms"]``: per epoch, a list with each layer's
        gradient norm (its W and b together, the mean over the epoch's updates),
        at the cost of one more pass over the gradient a step.

        ``checkpoint`` (gradient checkpointing) trades time for memory: with an
        integer k the forward pass keeps the activations only at the start of
        every k-th block (a dense layer and what follows it up to the next one; a
        residual block whole) and backward recomputes the rest, segment by
        segment; "sqrt" picks k = ⌈√blocks⌉. Gradients, and so the whole fit, are
        bit-identical to the fit without it (dropout masks are kept, batch
        statistics recomputed without moving the running ones).
        :meth:`activation_memory` tells what it saves.

        ``sample_weight`` (n,): each sample's weight, finite and >= 0. Each
        batch's loss becomes the weighted mean Σ wᵢ·lᵢ / Σ wᵢ (lᵢ the sample's
        loss, averaged over the outputs as the loss averages them), and so does
        its gradient; the recorded loss and accuracy are weighted alike. A batch
        whose weights are all 0 has a zero gradient (its update still runs: the
        optimizer's momentum and weight decay act). Weights all 1 give the
        unweighted fit bit for bit; multiplying every weight by a constant does
        not change the fit. ``class_weight`` (classifiers: cross_entropy, or
        binary_cross_entropy with one output): ``{class: weight}`` (classes
        missing from it weigh 1) or "balanced", n / (n_classes · count of the
        class), the samples counted by their ``sample_weight`` (as scikit-learn's
        compute_class_weight); it multiplies ``sample_weight``. With
        ``validation_split`` the held-out samples keep their weights for
        ``val_loss``; ``validation_data`` may be ``(X, y, sample_weight)``.

        ``comm`` (a :class:`fastmlp.distributed.Communicator`, e.g.
        ``fm.distributed.MPI()``) trains data-parallel across its ranks: every
        rank calls fit with the same data and options, ``batch_size`` is the global
        batch, rank 0's parameters and optimizer state are broadcast first, and
        each step's gradient is summed across the ranks; :mod:`fastmlp.distributed`
        tells more. Only rank 0 prints. After every epoch the ranks compare a
        digest of their parameters: if they ever differ, the fit stops with the
        same error on every rank.

        ``shard=True`` (with ``comm``): every rank passes only its own rows (any
        count >= 1 each; the features, targets' width, dtype and options agree).
        ``batch_size`` is still the global batch over all N rows of all ranks:
        every rank runs ceil(N / batch_size) steps an epoch, each global batch
        holding exactly batch_size rows (the last the rest), of which each rank
        gives its next rows in proportion to its shard (the ranks' rows
        interleaved: :mod:`fastmlp.distributed` tells how), so every row is seen
        once an epoch. ``shuffle`` shuffles each rank's rows within its shard.
        The loss, accuracy, ``validation_split`` (the last fraction of each
        rank's rows held out), ``validation_data`` (each rank its part),
        ``sample_weight`` and ``class_weight="balanced"`` (classes counted over
        every rank's rows) are all global: the history's figures are the means
        over every rank's samples, the same on every rank. A checkpoint's
        fingerprint covers every rank's data, so resuming with other shards is
        refused. Without ``comm``, or with one rank, shard=True is the plain fit.

        ``checkpoint_every=k`` with ``checkpoint_path`` writes the network (the
        model file of :meth:`save`, atomically; with ``comm``, from rank 0) after
        every k-th epoch, with the fit's progress and history in its metadata
        (``"fastmlp.fit"``). ``fit(..., resume_from=path)`` with the same data and
        arguments continues such a fit where its checkpoint left it: a fit killed
        and resumed ends bit for bit as the uninterrupted one (its history too, and
        early stopping's state: the checkpoint keeps its best value, epoch and
        patience count, and the best epoch's parameters when it restores them).

        If the loss or the gradient turns non-finite the fit stops with
        FloatingPointError (its ``history`` attribute holds what was recorded)
        and the weights keep their last finite values.

        On a GPU (:meth:`to`) the epochs run there: X, y and the weights are
        copied to the device once per fit, and the batches and their order are
        the CPU fit's. ``comm`` is not supported there yet.
        """
        if not isinstance(shard, (bool, np.bool_)):
            raise TypeError(f"shard: expected True or False, got {shard!r}")

        def plan(sharded: bool = False) -> _FitPlan:
            made = self._plan_fit(X, y, epochs, batch_size, optimizer, shuffle, verbose, validation_split,
                                  validation_data, early_stopping, on_epoch_end, record_layer_norms, checkpoint,
                                  sample_weight, class_weight, sharded)
            return self._plan_checkpoints(made, checkpoint_every, checkpoint_path, resume_from)

        if comm is not None:
            return self._fit_across(comm, plan, bool(shard))
        return self._run_fit(plan())  # shard=True in one process: it holds every row

    def _fit_across(self, comm, make_plan, shard: bool = False) -> History:
        """fit on every rank of ``comm``: the arguments checked on every rank and
        compared across them (a refusal or a difference anywhere raises on every
        rank), rank 0's state broadcast, then the epochs with each step's gradient
        summed across the ranks. ``shard``: every rank passed its own rows; what
        depends on all of them is worked out across the ranks (_plan_shards)."""
        from .distributed import Communicator

        if not isinstance(comm, Communicator):
            raise TypeError(f"comm: expected a fastmlp.distributed.Communicator such as fm.distributed.MPI(), "
                            f"got {comm!r:.100}")
        sharded = shard and comm.size > 1
        plan, summary, refused = None, None, None
        try:
            if self._device != "cpu":  # refused on every rank below, not left to hang the others
                raise ValueError(f"comm: training across ranks on device {self._device!r} is not supported yet; "
                                 f"train across ranks on the CPU (net.to('cpu'))")
            plan = make_plan(sharded)
            if sharded and self._running_means:  # refused here, before anything is broadcast
                raise ValueError("batch norm is not supported with shard=True across ranks yet (a rank may hold "
                                 "no row of a batch, whose statistics need every rank)")
            if sharded:
                summary = self._shard_summary(plan)
            else:
                self._check_batch_norm_batches(plan.X.shape[0], plan.batch, ranks=comm.size)
        except Exception as error:  # any refusal (a missing resume_from file too): told to every rank below
            plan, refused = None, error
        mine = (None if refused is None else f"{type(refused).__name__}: {refused}",
                None if plan is None else {**self._agreement(plan), "checkpoint_every": plan.checkpoint_every,
                                           "resume_from": None if plan.resume is None
                                           else plan.resume[1]["epochs_done"]},
                bool(shard), summary)
        everyone = comm.allgather(mine)
        problems = [f"rank {rank}: {message}" for rank, (message, *_) in enumerate(everyone) if message]
        if problems:
            raise ValueError("fit across ranks: " + "; ".join(problems)) from refused
        for rank, (_, _, theirs, _) in enumerate(everyone):
            if theirs != everyone[0][2]:
                raise ValueError(f"fit across ranks: the ranks disagree on shard: rank 0 has {everyone[0][2]}, "
                                 f"rank {rank} has {theirs}")
        first = everyone[0][1]
        for rank, (_, agreement, *_) in enumerate(everyone[1:], 1):
            for key, value in first.items():
                if agreement[key] != value:
                    raise ValueError(f"fit across ranks: the ranks disagree on {key}: rank 0 has {value!r:.120}, "
                                     f"rank {rank} has {agreement[key]!r:.120}")
        if sharded:
            plan = self._plan_shards(comm, plan, [summary for *_, summary in everyone])
        state = comm.broadcast(self._snapshot() if comm.rank == 0 else None)
        if comm.rank != 0:
            self._restore(_check_state(self, *state))
        with comm.gradient_memory(self.n_params, self._dtype) as memory:
            # Held in a list emptied as the block ends: the window may be freed later even
            # after an exception (Communicator.gradient_memory), and no view of it may
            # outlive the block in the frames a traceback keeps.
            holder = [memory]
            del memory
            try:
                return self._run_fit(replace(plan, comm=comm, gradient_memory=holder,
                                             verbose=plan.verbose if comm.rank == 0 else 0))
            finally:
                holder.clear()

    def _agreement(self, plan: _FitPlan) -> dict:
        """What every rank's fit must agree on (and a resumed fit with the fit it
        continues), as JSON values: the data's shapes, dtypes and a digest of their
        bytes, the architecture, the loss and the fit's options. Sharded, the data's
        shapes past the first axis and dtypes only (every rank has its own rows), and
        the validation and class weights asked for."""
        sharded = plan.shard_options is not None

        def data(array):
            if array is None:
                return None
            return [list(array.shape[1:]), array.dtype.str] if sharded else _described(array)

        agreement = {"X": data(plan.X), "y": data(plan.y), "sample weights": data(plan.w),
                     "validation X": data(plan.X_val), "validation y": data(plan.y_val),
                     "validation weights": data(plan.w_val), "architecture": self.architecture,
                     "loss": [self._loss, self._huber_delta], "dtype": self._dtype.name, "epochs": plan.epochs,
                     "batch_size": plan.batch, "shuffle": plan.shuffle, "optimizer": repr(plan.optimizer),
                     "checkpoint": plan.checkpoint, "early_stopping": repr(plan.early_stopping),
                     "record_layer_norms": plan.record_layer_norms}
        return {**agreement, **plan.shard_options} if sharded else agreement

    def _shard_summary(self, plan: _FitPlan) -> dict:
        """What the other ranks need of this rank's shard: its training rows, its data's
        digests (the fit's fingerprint covers every rank's data) and, for
        class_weight="balanced", its samples' total weight and per-class weight."""
        digests = {key: None if array is None else _described(array) for key, array in
                   (("X", plan.X), ("y", plan.y), ("sample weights", plan.w), ("validation X", plan.X_val),
                    ("validation y", plan.y_val), ("validation weights", plan.w_val))}
        classes = None
        if plan.class_weight == "balanced":
            total, counts = _class_totals(self._class_shares(plan.y), plan.w)
            classes = [total, counts.tolist()]
        return {"rows": int(plan.X.shape[0]), "digests": digests, "classes": classes}

    def _plan_shards(self, comm, plan: _FitPlan, summaries: list) -> _FitPlan:
        """A sharded plan finished with what every rank's summary tells (the same on
        every rank): the fingerprint of the fit (checked against the checkpoint to
        resume from), the class weights ("balanced" counts every rank's samples), the
        checks that some training (and validation) sample weighs more than 0, and the
        weights' power-of-two scale (one for all ranks, from the largest weight of
        any rank). A failure on one rank is raised on every rank."""
        fingerprint = json.loads(json.dumps({**self._agreement(plan), "shards": [s["digests"] for s in summaries]}))
        if plan.resume is not None:  # each rank checks the checkpoint it read: one's refusal is every rank's
            _on_every_rank(comm, lambda: (_check_resumed_fit(plan.resume_from, plan.resume[1], fingerprint), None))
        per_class = None
        if plan.class_weight == "balanced":
            total = sum(s["classes"][0] for s in summaries)
            counts = np.sum([s["classes"][1] for s in summaries], axis=0, dtype=np.float64)
            per_class = _class_weights("balanced", self._class_shares(plan.y[:1]), totals=(total, counts))
        elif plan.class_weight is not None:
            per_class = np.asarray(plan.class_weight, dtype=np.float64)

        def weigh():
            w = self._weighted_by_class(plan.w, per_class, plan.y,
                                        "class_weight" if plan.w is None else "sample_weight × class_weight")
            w_val = plan.w_val
            if plan.X_val is not None:
                w_val = self._weighted_by_class(w_val, per_class, plan.y_val, "the validation weights × class_weight")
            return (w, w_val), [None if a is None or not a.size else float(a.max()) for a in (w, w_val)]

        (w, w_val), tops = _on_every_rank(comm, weigh)
        top, top_val = (max((t[i] for t in tops if t[i] is not None), default=None) for i in (0, 1))
        if w is not None and not top:
            given = " and ".join(name for name, value in (("sample_weight", plan.w), ("class_weight", per_class))
                                 if value is not None)
            raise ValueError(f"{given}: every training sample's weight is zero, on every rank; nothing would be "
                             f"learned")
        if w_val is not None and not top_val:
            where = ("validation_data: every sample's weight is zero, on every rank"
                     if plan.shard_options["validation"] == "validation_data"
                     else "validation_split: the held-out samples of every rank all weigh 0")
            raise ValueError(f"{where}; val_loss would mean nothing")
        return replace(plan, w=_relative(w, top), w_val=_relative(w_val, top_val), class_weight=None,
                       shard_rows=tuple(s["rows"] for s in summaries), fingerprint=fingerprint)

    def _plan_fit(self, X, y, epochs, batch_size, optimizer, shuffle, verbose, validation_split,
                  validation_data, early_stopping, on_epoch_end, record_layer_norms=False,
                  checkpoint=None, sample_weight=None, class_weight=None, sharded=False) -> _FitPlan:
        """Every argument of fit checked and converted, before anything runs.
        ``sharded``: this rank's rows only; the class weights and the weights' checks
        and scale wait for every rank's (_plan_shards)."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        y = self._targets(y, X.shape[0])
        w = check_sample_weight(sample_weight, "sample_weight", X.shape[0], self._dtype, allow_all_zero=True)
        epochs = check_int(epochs, "epochs", minimum=1, maximum=MAX_COUNT)
        batch = 0 if batch_size is None else check_int(batch_size, "batch_size", minimum=1, maximum=MAX_COUNT)
        optimizer = self._resolve_optimizer(optimizer, remember=False)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle: expected True or False, got {shuffle!r}")
        verbose = check_int(verbose, "verbose")
        if verbose not in (0, 1, 2):
            raise ValueError(f"verbose: expected 0, 1 or 2, got {verbose}")
        X, y, w, X_val, y_val, w_val = self._validation_set(X, y, w, validation_split, validation_data)
        # Class weights: "balanced" counts the training samples; the validation samples,
        # however given, are weighed by the same per-class weights.
        per_class = self._class_weight(class_weight, y, w)
        shard_options, pending = None, None
        if sharded:  # counted, checked and scaled over every rank's samples: _plan_shards
            pending = "balanced" if isinstance(class_weight, str) else None if per_class is None else per_class.tolist()
            validation = "validation_data" if validation_data is not None else float(validation_split)
            shard_options = {"validation": validation, "class_weight": pending}
        else:
            w = self._weighted_by_class(w, per_class, y,
                                        "class_weight" if w is None else "sample_weight × class_weight")
            if X_val is not None:
                w_val = self._weighted_by_class(w_val, per_class, y_val, "the validation weights × class_weight")
            if w is not None and not w.any():
                given = " and ".join(name for name, value in (("sample_weight", sample_weight),
                                                              ("class_weight", class_weight)) if value is not None)
                raise ValueError(f"{given}: every training sample's weight is zero; nothing would be learned")
            if w_val is not None and not w_val.any():
                where = ("validation_data: every sample's weight is zero" if validation_data is not None else
                         f"validation_split: the {len(w_val)} held-out samples all weigh 0")
                raise ValueError(f"{where}; val_loss would mean nothing")
            w, w_val = _relative(w), _relative(w_val)
        if early_stopping is True:
            early_stopping = EarlyStopping()
        elif early_stopping is False:
            early_stopping = None
        if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
            raise TypeError(f"early_stopping: expected fm.EarlyStopping(...), True or None, got {early_stopping!r}")
        if on_epoch_end is not None and not callable(on_epoch_end):
            raise TypeError(f"on_epoch_end: expected a function (epoch, logs) -> bool, got {on_epoch_end!r}")
        if not isinstance(record_layer_norms, (bool, np.bool_)):
            raise TypeError(f"record_layer_norms: expected True or False, got {record_layer_norms!r}")
        checkpoint = self._checkpoint(checkpoint)
        self._check_batch_norm_batches(X.shape[0], batch)
        plan = _FitPlan(X, y, X_val, y_val, epochs, batch, bool(shuffle), optimizer, optimizer._config(),
                        optimizer._schedule_config(), verbose, early_stopping, on_epoch_end,
                        bool(record_layer_norms), checkpoint, w, w_val, shard_options=shard_options,
                        class_weight=pending)
        if early_stopping is not None:  # its monitor refused now, before anything runs (or is broadcast)
            early_stopping._start(X_val is not None, self._history_keys(plan))
        return plan

    def _plan_checkpoints(self, plan: _FitPlan, checkpoint_every, checkpoint_path, resume_from) -> _FitPlan:
        """fit's checkpoint_every, checkpoint_path and resume_from checked; the checkpoint
        to resume from read and checked against this network and fit (applied only
        when the fit starts)."""
        if (checkpoint_every is None) != (checkpoint_path is None):
            raise ValueError("checkpoint_every and checkpoint_path: give both (a checkpoint every k epochs, "
                             "written to the path) or neither")
        every = 0 if checkpoint_every is None else check_int(checkpoint_every, "checkpoint_every", minimum=1,
                                                             maximum=MAX_COUNT)
        path = None if checkpoint_path is None else os.fspath(checkpoint_path)
        if path is not None:  # found out now, not after the first checkpoint's epochs
            folder = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
                raise ValueError(f"checkpoint_path: cannot write {path}: its folder "
                                 f"{'is not writable' if os.path.isdir(folder) else 'does not exist'}")
        resume = None
        if resume_from is not None:
            from .io import _load

            where = os.fspath(resume_from)
            saved, best_params = _load(where)
            progress = saved.metadata.get(RESUME_KEY)
            if not (isinstance(progress, dict) and {"epochs_done", "epochs", "history", "fit"} <= set(progress)
                    <= {"epochs_done", "epochs", "history", "fit", "stopped", "early_stopping"}
                    and isinstance(progress["epochs_done"], int) and isinstance(progress["epochs"], int)
                    and isinstance(progress["history"], dict) and 0 < progress["epochs_done"] <= progress["epochs"]
                    and isinstance(progress.get("stopped", False), bool)
                    and _early_stopping_state(progress.get("early_stopping")) is not False):
                raise ValueError(f"resume_from: {where} is not a checkpoint of a fit (written with checkpoint_every); "
                                 f"its metadata has no valid {RESUME_KEY!r} entry")
            for what, mine, theirs in (("architecture", self.architecture, saved.architecture),
                                       ("dtype", self.dtype.name, saved.dtype.name), ("loss", self.loss, saved.loss)):
                if mine != theirs:
                    raise ValueError(f"resume_from: {where} holds a network of another {what} ({theirs!r:.100}; "
                                     f"this one: {mine!r:.100})")
            if progress["epochs"] != plan.epochs:
                raise ValueError(f"resume_from: {where} is a checkpoint of a fit of {progress['epochs']} epochs; this "
                                 f"fit asks for {plan.epochs} (give the same arguments as the interrupted fit)")
            if plan.shard_options is None:  # sharded: once every rank's data is known (_plan_shards)
                _check_resumed_fit(where, progress, self._agreement(plan))
            if plan.early_stopping is not None and progress.get("early_stopping") is None:
                raise ValueError(f"resume_from: {where} holds no early stopping state (written before fastmlp kept "
                                 f"it); resume without early_stopping")
            if (plan.early_stopping is not None and plan.early_stopping.restore_best_weights
                    and progress["early_stopping"]["best_epoch"] is not None and best_params is None):
                raise ValueError(f"resume_from: {where} lacks the best epoch's parameters (best_params) that early "
                                 f"stopping restores")
            history = {key: _from_json(values) for key, values in progress["history"].items()}
            resume = (_check_state(self, *saved._snapshot()),
                      {**progress, "history": history, "best_params": best_params,
                       "early_stopping": _early_stopping_state(progress.get("early_stopping"))})
            return replace(plan, checkpoint_every=every, checkpoint_path=path, resume=resume, resume_from=where)
        return replace(plan, checkpoint_every=every, checkpoint_path=path)

    def _write_checkpoint(self, plan: _FitPlan, epochs_done: int, history: History, fit: dict,
                          stopped: bool) -> None:
        """The network now, with the fit's progress, history, ``fit`` (its _agreement),
        whether it stops here and early stopping's state in its metadata (and the best
        epoch's parameters beside them), to plan.checkpoint_path (rank 0 only, across
        ranks)."""
        from .io import save

        if plan.comm is not None and plan.comm.rank != 0:
            return
        mine = self._metadata
        progress = {"epochs_done": epochs_done, "epochs": plan.epochs, "fit": fit, "stopped": stopped,
                    "history": {key: _to_json(values) for key, values in history.history.items()}}
        best_params = None
        watcher = plan.early_stopping
        if watcher is not None:
            progress["early_stopping"] = {"best": _to_json(watcher._best), "best_epoch": watcher._best_epoch,
                                          "wait": watcher._wait}
            best_params = watcher._best_params if watcher.restore_best_weights else None
        self._metadata = {**mine, RESUME_KEY: json.loads(json.dumps(progress))}
        try:
            save(self, plan.checkpoint_path, best_params=best_params)
        finally:
            self._metadata = mine

    @staticmethod
    def _agree_to_stop(comm, epoch: int, stop: bool, failure: Exception | None) -> bool:
        """After an epoch across ranks: whether any rank stops (a callback or early
        stopping said so); a failure on any rank (a callback's exception, a checkpoint
        that could not be written) raised on every rank, not left to hang the others."""
        told = comm.allgather((bool(stop), None if failure is None else f"{type(failure).__name__}: {failure}"))
        failures = [f"rank {rank}: {message}" for rank, (_, message) in enumerate(told) if message]
        if failures:
            raise RuntimeError(f"fit across ranks: after epoch {epoch}, " + "; ".join(failures)) from failure
        return any(stopped for stopped, _ in told)

    def _check_ranks_agree(self, comm, epoch: int) -> None:
        """After an epoch across ranks: every rank's parameters and state must be the
        same bits (a digest each, compared); else the fit stops on every rank."""
        digest = hashlib.blake2b(memoryview(self._params), digest_size=16)
        digest.update(memoryview(np.ascontiguousarray(self.state)))
        digests = comm.allgather(digest.hexdigest())
        differing = [rank for rank, other in enumerate(digests) if other != digests[0]]
        if differing:
            raise RuntimeError(f"fit across ranks: after epoch {epoch} the parameters of rank(s) {differing} differ "
                               f"from rank 0's: the ranks no longer train the same network (an all-reduce gave "
                               f"them different sums); the fit stopped on every rank")

    def _class_shares(self, y: np.ndarray) -> np.ndarray:
        """Each sample's share of each class (n, k): its one-hot row, or (1 − t, t) for
        one sigmoid output."""
        return y if self._loss == "cross_entropy" else np.hstack([1 - y, y])

    def _class_weight(self, class_weight, y: np.ndarray, w) -> np.ndarray | None:
        """fit's ``class_weight`` as one weight per class (k,), float64 ("balanced"
        counts the classes of the targets ``y``, each sample by its weight ``w``);
        None without one."""
        if class_weight is None:
            return None
        if not (self._loss == "cross_entropy" or (self._loss == "binary_cross_entropy" and self.n_outputs == 1)):
            raise ValueError(f"class_weight: only for a cross_entropy classifier or a one-output "
                             f"binary_cross_entropy one; this network's loss is {self._loss!r} with "
                             f"{self.n_outputs} outputs (give sample_weight instead)")
        return _class_weights(class_weight, self._class_shares(y), w)

    def _weighted_by_class(self, w, per_class, y: np.ndarray, name: str):
        """The samples' weights ``w`` (None: all 1) times their class's weight, checked
        (finite in the network's dtype) under ``name``; ``w`` itself without class weights."""
        if per_class is None:
            return w
        weight = self._class_shares(y).astype(np.float64) @ per_class
        if w is not None:
            with np.errstate(over="ignore"):  # an inf is named below
                weight *= w
        return check_sample_weight(weight, name, y.shape[0], self._dtype, allow_all_zero=True)

    def _checkpoint(self, checkpoint) -> int:
        """fit's ``checkpoint`` as the engine's k (0: no checkpointing)."""
        if checkpoint is None or checkpoint is False:
            return 0
        if isinstance(checkpoint, str):
            if checkpoint != "sqrt":
                raise ValueError(f"checkpoint: expected None, a positive integer or 'sqrt', got {checkpoint!r}")
            return int(self._core.sqrt_checkpoint)
        return check_int(checkpoint, "checkpoint", minimum=1, maximum=MAX_COUNT)

    def activation_memory(self, batch_size: int, checkpoint: int | str | None = None) -> int:
        """Bytes of the workspace a training step of ``batch_size`` samples keeps
        (activations, pre-activations, normalised values, dropout masks and
        backward's gradient buffers), with ``checkpoint`` as in :meth:`fit`."""
        batch_size = check_int(batch_size, "batch_size", minimum=1, maximum=MAX_COUNT)
        return int(self._core.activation_memory(batch_size, self._checkpoint(checkpoint)))

    def _check_batch_norm_batches(self, n_samples: int, batch: int, ranks: int = 1) -> None:
        """Batch norm's statistics need 2 samples or more in every training batch and,
        across ranks, a sample of every batch on every rank."""
        if not self._running_means:
            return
        size = n_samples if batch == 0 or batch >= n_samples else batch
        if size < 2 or n_samples % size == 1:
            raise ValueError(f"batch norm in training needs at least 2 samples per batch; {n_samples} samples in "
                             f"batches of {size} leave a batch of 1 (change batch_size, or drop a sample)")
        smallest = min(size, n_samples % size or size)
        if smallest < ranks:
            raise ValueError(f"batch norm across {ranks} ranks needs a sample of every batch on every rank; "
                             f"{n_samples} samples in batches of {size} leave a batch of {smallest} "
                             f"(change batch_size, or drop or add samples)")

    def _validation_set(self, X, y, w, validation_split, validation_data):
        """(X, y, w, X_val, y_val, w_val): the training samples and their weights, and
        the validation set and its weights (None, None, None without one)."""
        validation_split = check_real(validation_split, "validation_split", 0.0, 1.0, high_open=True)
        if validation_data is not None:
            if validation_split:
                raise ValueError("give validation_data or validation_split, not both")
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise TypeError("validation_data: expected a pair (X_val, y_val) or a triple "
                                "(X_val, y_val, sample_weight_val)")
            X_val, y_val, w_val = (*validation_data, None)[:3]
            X_val = check_samples(X_val, "validation_data X", self.n_inputs, self._dtype)
            y_val = self._targets(y_val, X_val.shape[0], "validation_data y")
            w_val = check_sample_weight(w_val, "validation_data sample_weight", X_val.shape[0], self._dtype)
            return X, y, w, X_val, y_val, w_val
        if not validation_split:
            return X, y, w, None, None, None
        n_val = int(round(X.shape[0] * validation_split))
        if n_val < 1 or n_val >= X.shape[0]:
            raise ValueError(
                f"validation_split: {validation_split} of {X.shape[0]} samples leaves "
                f"{n_val} for validation and {X.shape[0] - n_val} for training; both need at least one"
            )
        if w is None:
            return X[:-n_val], y[:-n_val], None, X[-n_val:], y[-n_val:], None
        return X[:-n_val], y[:-n_val], w[:-n_val], X[-n_val:], y[-n_val:], w[-n_val:]

    def _run_fit(self, plan: _FitPlan) -> History:
        """The epochs of a checked fit, a chunk per engine call: one epoch when Python
        watches, or across ranks (their parameters compared after each); chunks end
        at the checkpoints."""
        if plan.early_stopping is not None:
            plan.early_stopping._start(plan.X_val is not None, self._history_keys(plan))
        history = History()
        epoch = 0
        if plan.resume is not None:  # the interrupted fit's state and history, then its remaining epochs
            state, progress = plan.resume
            self._restore(state)
            epoch = progress["epochs_done"]
            history.history = {key: list(values) for key, values in progress["history"].items()}
            history.epoch = list(range(epoch))
            watcher = plan.early_stopping
            if watcher is not None:
                watcher._best, watcher._best_epoch, watcher._wait = progress["early_stopping"]
                if watcher.restore_best_weights and progress["best_params"] is not None:
                    watcher._best_params = progress["best_params"].copy()
            if progress.get("stopped"):  # it had stopped there (early stopping, or a callback)
                history.stopped_epoch = epoch - 1
                epoch = plan.epochs
        self._optimizer = plan.optimizer
        across = plan.comm is not None and plan.comm.size > 1
        chunk = 1 if plan.watched or across else min(plan.epochs, SILENT_CHUNK)
        fit = None
        printer = ProgressPrinter(plan.verbose, plan.epochs) if plan.verbose else None
        try:
            while epoch < plan.epochs:
                count = min(chunk, plan.epochs - epoch)
                if plan.checkpoint_every:
                    count = min(count, plan.checkpoint_every - epoch % plan.checkpoint_every)
                self._fit_epochs(plan, epoch, count, history)
                epoch += count
                if across:
                    self._check_ranks_agree(plan.comm, epoch - 1)
                # The callbacks first (they may change the network), then the checkpoint, which
                # records the stop the ranks agreed on (a stop asked on any rank is every rank's).
                stop, failure = False, None
                try:
                    stop = plan.watched and self._epoch_end(plan, epoch - 1, history, printer)
                except Exception as error:
                    if not across:
                        raise
                    failure = error
                if across:  # a stop, or a failure, on any rank: on every rank
                    stop = self._agree_to_stop(plan.comm, epoch - 1, stop, failure)
                if plan.checkpoint_every and epoch % plan.checkpoint_every == 0:
                    try:
                        if fit is None:  # the data's digest: once per fit
                            fit = plan.fingerprint if plan.fingerprint is not None else self._agreement(plan)
                        self._write_checkpoint(plan, epoch, history, fit, bool(stop))
                    except Exception as error:
                        if not across:
                            raise
                        failure = error
                    if across:  # rank 0's failure to write it: every rank's
                        self._agree_to_stop(plan.comm, epoch - 1, False, failure)
                if stop:
                    history.stopped_epoch = epoch - 1
                    break
        finally:
            if printer is not None:
                printer.close()
            self._last_batch = None
            if self._device != "cpu":
                self._core.release_device_data()
        if plan.early_stopping is not None:
            history.best_epoch = plan.early_stopping._best_epoch
            if plan.early_stopping.restore_best_weights and plan.early_stopping._best_params is not None:
                self._sync_host()
                self._params[...] = plan.early_stopping._best_params
                self._host_changed()
        return history

    def _history_keys(self, plan: _FitPlan) -> list[str]:
        keys = ["loss", "grad_norm", "lr"] + (["accuracy"] if self.is_classifier else [])
        if plan.X_val is not None:
            keys += ["val_loss"] + (["val_accuracy"] if self.is_classifier else [])
        return keys

    def _fit_epochs(self, plan: _FitPlan, start: int, epochs: int, history: History) -> None:
        """Runs ``epochs`` epochs in the engine and records them; a non-finite loss
        or gradient raises FloatingPointError carrying the history so far."""
        across = {}
        if plan.comm is not None and plan.comm.size > 1:
            comm = plan.comm

            def reduce(grads, figures):
                if grads.size:  # else figures alone: batch norm's statistics, a sharded fit's batch weights
                    comm.allreduce_sum(grads)
                comm.allreduce_sum(figures)

            across = {"rank": comm.rank, "ranks": comm.size, "reduce": reduce,
                      "gradient_memory": plan.gradient_memory[0] if plan.gradient_memory else None}
            if plan.shard_rows is not None:
                across["shard_rows"] = list(plan.shard_rows)
        if self._device != "cpu":  # X and y stay on the device across the engine calls of this fit
            across["data_key"] = id(plan)
        try:
            result = self._core.fit(plan.X, plan.y, epochs, plan.batch, plan.shuffle, self._loss,
                                    self._huber_delta, plan.config, plan.schedule, self.is_classifier,
                                    plan.record_layer_norms, plan.checkpoint, plan.w, **across)
        finally:
            across.pop("gradient_memory", None)  # no view of the communicator's memory kept in this frame
        for e in range(result["epochs"]):
            logs = {key: result[key][e] for key in ("loss", "grad_norm", "lr")}
            if self.is_classifier:
                logs["accuracy"] = result["accuracy"][e]
            if plan.record_layer_norms:
                logs["layer_grad_norms"] = result["layer_grad_norm"][e].tolist()
            if plan.X_val is not None:
                logs.update(self._evaluate_prepared(plan.X_val, plan.y_val, plan.w_val, prefix="val_")
                            if plan.shard_rows is None else self._evaluate_shards(plan))
            history._append(logs)
        if result["status"] == "non_finite":
            where, layer = "", None
            if result["reason"] == "the gradient":  # grads still hold the failed batch's gradient
                layer = self._first_non_finite_layer()
                if layer is not None:
                    where = (f", first at layer {layer} ({self._sizes[layer]}→{self._sizes[layer + 1]}) "
                             f"going backward from the output")
            error = FloatingPointError(
                f"fit: {result['reason']} became non-finite in epoch {start + result['failed_epoch']} "
                f"(batch {result['failed_batch']}){where}; the weights keep their last finite values. "
                f"Try a smaller learning rate (lr={plan.optimizer.lr}), gradient clipping or scaled inputs."
            )
            error.history = history  # type: ignore[attr-defined]
            error.layer = layer  # type: ignore[attr-defined]
            raise error

    def _first_non_finite_layer(self) -> int | None:
        """The layer where the gradient in ``grads`` first went non-finite as
        backpropagation runs (from the output toward the input): the highest
        layer whose W or b gradient holds a non-finite value; None if none does."""
        self._sync_host()
        for layer in reversed(range(len(self._grad_weights))):
            if not (np.isfinite(self._grad_weights[layer]).all() and np.isfinite(self._grad_biases[layer]).all()):
                return layer
        return None

    def _epoch_end(self, plan: _FitPlan, epoch: int, history: History, printer) -> bool:
        """Printing, early stopping and the callback after a watched epoch; True stops the fit."""
        logs = {key: values[-1] for key, values in history.history.items()}
        if printer is not None:
            printer.epoch_end(epoch, logs)
        if plan.early_stopping is not None and plan.early_stopping.restore_best_weights:
            self._sync_host()  # it may copy the parameters
        stop = plan.early_stopping is not None and plan.early_stopping._update(epoch, logs, self._params)
        if plan.on_epoch_end is not None and plan.on_epoch_end(epoch, dict(logs)):
            stop = True
        return stop

    def partial_fit(self, X, y, classes=None, optimizer: Optimizer | None = None,
                    batch_size: int | None = None, shuffle: bool = True, sample_weight=None) -> "Network":
        """One pass over (X, y) from the current weights and optimizer state (the
        last optimizer used when None), as scikit-learn's partial_fit; returns self.
        ``sample_weight`` as in :meth:`fit`.

        ``classes`` is accepted for scikit-learn's signature: a classifier's
        classes are always 0..n_outputs-1, and a ``classes`` that says otherwise
        is an error."""
        if classes is not None:
            if self._loss != "cross_entropy":
                raise ValueError(f"classes: only for a cross_entropy classifier; this network's loss is {self._loss!r}")
            wanted = np.arange(self.n_outputs)
            given = np.asarray(classes)
            if given.shape != wanted.shape or not np.array_equal(given, wanted):
                raise ValueError(f"classes: the network's classes are 0..{self.n_outputs - 1} (one per output); "
                                 f"got {given.tolist()!r}")
        self.fit(X, y, epochs=1, batch_size=batch_size, optimizer=optimizer, shuffle=shuffle,
                 sample_weight=sample_weight)
        return self

    # ---- inference -------------------------------------------------------------------
    def decision_function(self, X) -> np.ndarray:
        """The raw outputs (n_samples, n_outputs): a regressor's predictions, a
        classifier's logits. Unlike ``forward`` it leaves the cache that
        ``backward`` reads alone."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        out = np.empty((X.shape[0], self.n_outputs), dtype=self._dtype)
        self._core.predict(X, out)
        return out

    def predict(self, X) -> np.ndarray:
        """Regression: the outputs (n_samples, n_outputs). Classifiers: the classes,
        int64 — shape (n_samples,) for cross_entropy (the most probable class) and
        for binary_cross_entropy with one output, (n_samples, n_outputs) for
        several (each output's probability > 0.5)."""
        out = self.decision_function(X)
        if self._loss == "cross_entropy":
            return np.argmax(out, axis=1).astype(np.int64, copy=False)
        if self._loss == "binary_cross_entropy":
            labels = (out > 0).astype(np.int64)
            return labels[:, 0] if self.n_outputs == 1 else labels
        return out

    def predict_proba(self, X) -> np.ndarray:
        """Classifiers: probabilities (n_samples, n_outputs) — softmax rows for
        cross_entropy, each output's sigmoid for binary_cross_entropy."""
        if not self.is_classifier:
            raise TypeError(f"predict_proba: only for classifiers (loss cross_entropy or binary_cross_entropy); "
                            f"this network's loss is {self._loss!r}: use predict")
        out = self.decision_function(X)
        if self._loss == "cross_entropy":
            _core.softmax(out, out)
        else:
            _core.activation_forward("sigmoid", out, out)
        return out

    def _evaluate_shards(self, plan: _FitPlan) -> dict[str, float]:
        """val_loss (and val_accuracy) of a sharded fit: the weighted means over every
        rank's validation samples, from each rank's sums (one small all-reduce)."""
        loss, correct = self._core.evaluate(plan.X_val, plan.y_val, self._loss, self._huber_delta,
                                            self.is_classifier, plan.w_val)
        weight = plan.X_val.shape[0] if plan.w_val is None else float(plan.w_val.sum(dtype=np.float64))
        # The loss's normalizer, which is also the accuracy's units (loss_normalizer).
        units = weight if self._loss == "cross_entropy" else weight * self.n_outputs
        sums = np.array([loss * units, units, correct if self.is_classifier else 0.0])
        plan.comm.allreduce_sum(sums)
        result = {"val_loss": float(sums[0] / sums[1]) if sums[1] > 0 else 0.0}
        if self.is_classifier:
            result["val_accuracy"] = float(sums[2] / sums[1]) if sums[1] > 0 else 0.0
        return result

    def _evaluate_prepared(self, X, y, w=None, prefix: str = "") -> dict[str, float]:
        loss, correct = self._core.evaluate(X, y, self._loss, self._huber_delta, self.is_classifier, w)
        result = {prefix + "loss": float(loss)}
        if self.is_classifier:
            samples = X.shape[0] if w is None else float(w.sum(dtype=np.float64))
            units = samples if self._loss == "cross_entropy" else samples * self.n_outputs
            result[prefix + "accuracy"] = correct / units
        return result

    def evaluate(self, X, y, sample_weight=None) -> dict[str, float]:
        """``{"loss": L}`` on (X, y) with the network's loss, and ``"accuracy"`` for
        classifiers (binary_cross_entropy: the fraction of outputs right); both
        weighted means with ``sample_weight``."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        y = self._targets(y, X.shape[0])
        w = check_sample_weight(sample_weight, "sample_weight", X.shape[0], self._dtype)
        return self._evaluate_prepared(X, y, _relative(w))

    def score(self, X, y, sample_weight=None) -> float:
        """As scikit-learn: accuracy for classifiers, the coefficient of
        determination R² (averaged over outputs) for regression; weighted with
        ``sample_weight`` as scikit-learn weighs them. A binary_cross_entropy
        network of several outputs scores the fraction of outputs right (as
        ``evaluate``'s accuracy), not scikit-learn's exact match of whole rows."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        y = self._targets(y, X.shape[0])
        w = _relative(check_sample_weight(sample_weight, "sample_weight", X.shape[0], self._dtype))
        if self.is_classifier:
            return self._evaluate_prepared(X, y, w)["accuracy"]
        pred = self.decision_function(X).astype(np.float64)
        target = y.astype(np.float64)
        weight = np.ones((X.shape[0], 1)) if w is None else w.astype(np.float64)[:, None]
        mean = (weight * target).sum(axis=0) / weight.sum()
        residual = (weight * (target - pred) ** 2).sum(axis=0)
        total = (weight * (target - mean) ** 2).sum(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            r2 = np.where(total > 0, 1 - residual / np.where(total > 0, total, 1), np.where(residual == 0, 1.0, 0.0))
        return float(np.mean(r2))

    def to_onnx(self, path=None, *, opset: int | None = None):
        """The network's inference pass as an ONNX model (an ``onnx.ModelProto``),
        written to ``path`` too when one is given (atomically). Dense layers become
        ``Gemm``, norms ``LayerNormalization`` / ``BatchNormalization`` (running
        statistics), residual blocks ``Add``; a classifier's graph ends in its
        ``Softmax`` or ``Sigmoid`` and outputs ``"probabilities"``, a regressor's
        ``"predictions"``; the input is ``"X"``, with a dynamic batch dimension.
        ``opset``: None for 17 (20 when gelu is used). Needs the onnx package
        (``pip install "fastmlp[onnx]"``); :mod:`fastmlp.onnx_export` tells more."""
        from .onnx_export import to_onnx

        return to_onnx(self, path, opset=opset)

    # ---- copies -------------------------------------------------------------------------
    @property
    def metadata(self) -> dict:
        """The user's notes about this network: a dict with str keys and JSON values
        (str, numbers, bool, None, lists, dicts), ``{}`` at first. It travels with
        the network: saved in the model file's header, restored by ``fm.load``,
        kept by pickle, ``copy`` and ``astype``. ``fastmlp train`` keeps there what
        ``fastmlp predict`` needs (the feature columns, the class labels, the
        inputs' standardization). Checked when assigned and when saved."""
        return self._metadata

    @metadata.setter
    def metadata(self, value) -> None:
        self._metadata = _check_metadata(value)

    def _settings(self) -> dict:
        return {"loss": self._loss, "huber_delta": self._huber_delta, "seed": self._seed}

    def _snapshot(self) -> tuple:
        """(params, optimizer_state, rng_state, state) as pickled: copies of the
        parameters, ``(optimizer, kind, steps, buffers)``, ``((w0, w1, w2, w3),
        has_spare, spare)`` and batch norm's running statistics, all read together
        (during a fit, between two batches)."""
        params, kind, steps, buffers, rng, state = self._core.snapshot()
        optimizer = self._optimizer
        if optimizer is None or kind != optimizer._kind or len(buffers) != optimizer._config().state_buffers:
            steps, buffers = 0, []  # no state of this optimizer (none made, reset, or a switch that failed)
        return params, (optimizer, kind, steps, list(buffers)), rng, state

    def _restore(self, state: _State) -> None:
        """Applies a checked state (see _check_state) in one call, all of it or nothing."""
        config = state.optimizer._config() if state.optimizer is not None and (state.steps or state.buffers) else None
        rng = state.rng if state.rng is not None else self._core.snapshot()[4]
        self._core.restore(state.params, config, state.steps, state.buffers, *rng, state.state)
        self._optimizer = state.optimizer

    def astype(self, dtype) -> "Network":
        """A new network with the same architecture, seed, parameters, running
        statistics, optimizer state and generator state (so shuffling continues
        alike), in ``dtype``, on the CPU (``.to("cuda")`` moves it)."""
        clone = Network.from_architecture(self.architecture, dtype=as_float_dtype(dtype), **self._settings())
        clone._restore(_check_state(clone, *self._snapshot()))
        clone._metadata = _check_metadata(self._metadata)
        return clone

    def save(self, path) -> None:
        """Writes the network to ``path`` in fastmlp's model format (a NumPy .npz with a
        JSON header; :mod:`fastmlp.io` documents it): architecture, parameters, batch
        norm's running statistics, the optimizer and its state, the generator's
        position. Atomic: written beside ``path`` and renamed over it. ``fm.load(path)``
        reads it back, without unpickling anything."""
        from .io import save

        save(self, path)

    def copy(self) -> "Network":
        """A new network as this one (see :meth:`astype`), on the CPU."""
        return self.astype(self._dtype)

    def __reduce__(self):
        return (_rebuild, (self.architecture, self._settings(), self._dtype.name, *self._snapshot(),
                           _check_metadata(self._metadata)))


def _check_metadata(value, name: str = "metadata") -> dict:
    """A deep copy of ``value`` that JSON can hold exactly: a dict with str keys whose
    values are str, finite numbers, bool, None, lists and dicts of the same."""
    if not isinstance(value, dict):
        raise TypeError(f"{name}: expected a dict of JSON values, got {type(value).__name__}")
    try:
        text = json.dumps(value, allow_nan=False)
    except RecursionError:
        raise ValueError(f"{name}: nested too deeply to save") from None
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name}: must hold only str keys and JSON values (str, finite numbers, bool, None, "
                         f"lists, dicts): {error}") from None
    copy = json.loads(text)
    if copy != value:  # keys that json.dumps turned into strings, tuples made lists
        raise ValueError(f"{name}: must hold only str keys and JSON values; tuples, and int or other keys, "
                         f"do not survive saving: got {value!r:.200}")
    return copy


@dataclass(frozen=True)
class _State:
    """A network's state, checked: what _restore applies."""

    params: np.ndarray
    optimizer: Optimizer | None
    steps: int
    buffers: list
    rng: tuple | None  # (words, has_spare, spare)
    state: np.ndarray | None = None  # batch norm's running statistics (None: keep the network's)


def _check_state(net: Network, params, optimizer_state=None, rng_state=None, state=None) -> _State:
    """Every field of a pickled (or copied) state checked against ``net``, the
    network it goes into; a ValueError or TypeError names the first bad field."""
    params = _check_flat(params, "params", net)
    optimizer, steps, buffers = _check_optimizer_state(optimizer_state, net)
    if state is not None:
        state = as_numeric_array(state, "state")
        if state.shape != net._state.shape:
            raise ValueError(f"state: expected shape {net._state.shape} (batch norm's running statistics), "
                             f"got {state.shape}")
        state = as_finite(state, "state", net.dtype)
        for layer in net._layers:
            if layer["type"] == "batch_norm":
                at, width = layer["state_offset"] + layer["inputs"], layer["inputs"]
                if (state[at : at + width] < 0).any():
                    raise ValueError("state: a batch norm layer's running variance is negative")
    return _State(params, optimizer, steps, buffers, _check_rng_state(rng_state), state)


def _check_flat(array, name: str, net: Network) -> np.ndarray:
    """A buffer of the parameters' layout: exactly (n_params,), finite in the network's dtype."""
    array = as_numeric_array(array, name)
    if array.shape != (net.n_params,):
        raise ValueError(f"{name}: expected shape ({net.n_params},) (the network's parameter count), "
                         f"got {array.shape}")
    return as_finite(array, name, net.dtype)


def _check_optimizer_state(state, net: Network) -> tuple:
    """(optimizer, steps, buffers) from a pickled ``(optimizer, kind, steps, buffers)``."""
    if state is None:
        return None, 0, []
    if not isinstance(state, (tuple, list)) or len(state) != 4:
        raise ValueError(f"optimizer_state: expected (optimizer, kind, steps, buffers), got {state!r:.200}")
    optimizer, kind, steps, buffers = state
    config = None if optimizer is None else _checked_config(optimizer)
    check_choice(kind, "optimizer_state kind", _core.OPTIMIZERS)
    steps = check_int(steps, "optimizer_state steps", minimum=0, maximum=MAX_COUNT)
    if not isinstance(buffers, (tuple, list)):
        raise TypeError(f"optimizer_state buffers: expected a list of arrays, got {type(buffers).__name__}")
    if optimizer is None or not (steps or buffers):
        if steps or buffers:
            raise ValueError("optimizer_state: holds update counts or buffers but no optimizer")
        return optimizer, 0, []
    if kind != optimizer._kind:
        raise ValueError(f"optimizer_state kind: {kind!r} is not the rule of the optimizer {optimizer!r}")
    expected = config.state_buffers
    if len(buffers) != expected:
        raise ValueError(f"optimizer_state buffers: {optimizer!r} keeps {expected} buffers, got {len(buffers)}")
    buffers = [_check_flat(b, f"optimizer_state buffers[{i}]", net) for i, b in enumerate(buffers)]
    return optimizer, steps, buffers


def _checked_config(optimizer) -> _core.OptimizerConfig:
    """The engine's config of a pickled optimizer, which its constructor checked once."""
    if not isinstance(optimizer, Optimizer):
        raise TypeError(f"optimizer_state optimizer: expected an optimizer or None, got {optimizer!r:.200}")
    try:
        optimizer._schedule_config()
        return optimizer._config()
    except (AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"optimizer_state optimizer: not a valid {type(optimizer).__name__}: {error}") from None


def _check_rng_state(state) -> tuple | None:
    """((w0, w1, w2, w3), has_spare, spare) of the network's generator, checked (None: keep it)."""
    return None if state is None else check_rng_state(state, "rng_state")


def _rebuild(architecture, settings, dtype, params, optimizer_state=None, rng_state=None, state=None,
             metadata=None) -> Network:
    """Unpickles a Network: from_architecture checks the architecture and settings,
    _check_state every other field, before anything is applied. A pickle from before
    the layer list (layer sizes, and the activations and inits among the settings) is
    rebuilt through the constructor."""
    keys = SETTINGS + (_OLD_SETTINGS if _is_layer_sizes(architecture) else ())
    if not isinstance(settings, dict) or set(settings) - set(keys):
        raise ValueError(f"settings: expected a dict with keys among {', '.join(keys)}, got {settings!r:.200}")
    if _is_layer_sizes(architecture):
        net = Network(architecture, dtype=as_float_dtype(dtype), **settings)
    else:
        net = Network.from_architecture(architecture, dtype=as_float_dtype(dtype), **settings)
    net._restore(_check_state(net, params, optimizer_state, rng_state, state))
    if metadata is not None:
        net._metadata = _check_metadata(metadata)
    return net


def _class_totals(shares: np.ndarray, w=None) -> tuple[float, np.ndarray]:
    """(n, counts): the samples' total weight and each class's (k,), each sample
    counted by its weight ``w`` (1 without) and its ``shares`` of the classes (n, k)."""
    weights = np.ones(shares.shape[0]) if w is None else w.astype(np.float64)
    return float(weights.sum()), weights @ shares.astype(np.float64)


def _class_weights(class_weight, shares: np.ndarray, w=None, totals=None) -> np.ndarray:
    """Each class's weight (k,) from fit's ``class_weight``: "balanced" gives
    n / (k · the class's count), the samples counted by their weights ``w`` when
    given (n = Σ w), as scikit-learn's compute_class_weight, or from ``totals``
    (n, counts) when given (a sharded fit's, over every rank); a class absent from
    the data 0 (it weighs nothing either way); a dict ``{class: weight}`` gives
    its weights, 1 for the classes it leaves out."""
    k = shares.shape[1]
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError(f"class_weight: expected 'balanced' or a dict {{class: weight}}, got {class_weight!r}")
        total, counts = _class_totals(shares, w) if totals is None else totals
        with np.errstate(divide="ignore"):
            return np.where(counts > 0, total / (k * np.where(counts > 0, counts, 1)), 0.0)
    if not isinstance(class_weight, dict):
        raise TypeError(f"class_weight: expected 'balanced' or a dict {{class: weight}}, got {class_weight!r:.100}")
    per_class = np.ones(k)
    for label, weight in class_weight.items():
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, numbers.Integral) or not 0 <= label < k:
            raise ValueError(f"class_weight: classes are 0..{k - 1}, got the key {label!r}")
        per_class[int(label)] = check_real(weight, f"class_weight[{label}]", 0.0, math.inf, high_open=True)
    return per_class


def _relative(w: np.ndarray | None, top: float | None = None) -> np.ndarray | None:
    """``w`` times the power of two that brings its largest weight (or ``top``, the
    largest of every rank's in a sharded fit) into [1, 2): exact
    (weights of one stay as they are, and w and 4·w become the same array), and it
    keeps Σ w, and the loss's 1 / Σ w, within range however large or small the
    weights are. Only weights below 2^-149 (float32) or 2^-1074 (float64) of the
    largest, which weigh nothing beside it, round to 0."""
    if w is None or not w.size:
        return w
    top = float(w.max()) if top is None else top
    if top == 0:
        return w
    exponent = int(np.frexp(top)[1]) - 1
    return w if exponent == 0 else np.ldexp(w, -exponent).astype(w.dtype, copy=False)


def _described(array: np.ndarray) -> list:
    """[shape, dtype, a digest of the bytes]: how a fit's data is told apart."""
    digest = hashlib.blake2b(np.ascontiguousarray(array).data, digest_size=16).hexdigest()
    return [list(array.shape), array.dtype.str, digest]


def _check_resumed_fit(where: str, progress: dict, fit: dict) -> None:
    """A checkpoint's fit (its progress's "fit") must be this one: ``fit``, its agreement
    as JSON (a sharded fit's with every rank's digests)."""
    for key, value in json.loads(json.dumps(fit)).items():
        if progress["fit"].get(key) != value:
            raise ValueError(f"resume_from: {where} is a checkpoint of a fit with another {key} "
                             f"(give the same data and arguments as the interrupted fit)")


def _on_every_rank(comm, work: Callable[[], tuple]) -> tuple:
    """``work()`` → (value, summary) on every rank of ``comm``: (this rank's value,
    every rank's summary in rank order); an exception on any rank raised on every
    rank (as fit's refusals: one ValueError naming the ranks), not left to hang the others."""
    value, summary, refused = None, None, None
    try:
        value, summary = work()
    except Exception as error:
        refused = error
    told = comm.allgather((None if refused is None else f"{type(refused).__name__}: {refused}", summary))
    problems = [f"rank {rank}: {message}" for rank, (message, _) in enumerate(told) if message]
    if problems:
        raise ValueError("fit across ranks: " + "; ".join(problems)) from refused
    return value, [theirs for _, theirs in told]


def _to_json(values):
    """History values for a checkpoint's JSON: a non-finite float as its repr ("nan", "inf")."""
    if isinstance(values, list):
        return [_to_json(v) for v in values]
    return values if math.isfinite(values) else repr(values)


def _from_json(values):
    """The inverse of :func:`_to_json`."""
    if isinstance(values, list):
        return [_from_json(v) for v in values]
    return float(values)


def _early_stopping_state(saved):
    """A checkpoint's early stopping state as (best, best_epoch, wait); None when it has
    none; False when it is malformed."""
    if saved is None:
        return None
    if not (isinstance(saved, dict) and set(saved) == {"best", "best_epoch", "wait"}
            and isinstance(saved["wait"], int) and saved["wait"] >= 0
            and (saved["best_epoch"] is None or isinstance(saved["best_epoch"], int))):
        return False
    try:
        best = _from_json(saved["best"])
    except (TypeError, ValueError):
        return False
    return best, saved["best_epoch"], saved["wait"]
