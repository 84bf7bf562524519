"""fastmlp's C++ kernels, for people who embed them.

Each arithmetic function has a NumPy twin of the same name and signature in
:mod:`fastmlp.reference` (gemm_kernel, available_gemm_kernels and set_gemm_kernel
choose the GEMM's kernel and have none). Inputs may be any real arrays: they are brought to
float32 (when every floating input is float32) or float64, and made
contiguous when they are not (a transposed matrix is passed to the GEMM as a
transpose, without a copy); read-only inputs (np.load(mmap_mode="r"),
np.frombuffer) are read where they lie. Results are new arrays unless ``out``
(or ``c``, or the buffers of an update) is given; such an output must be
writable, and an input sharing memory with it is read as it was before the
call. The GIL is released while a kernel runs.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _core
from ._validation import (as_float_dtype, as_numeric_array, check_choice, check_clip_value, check_int,
                          check_rng_state, check_sample_weight, common_float_dtype)
from .schedules import INT64_MAX, _schedule_config

ACTIVATIONS = _core.ACTIVATIONS
LOSSES = _core.LOSSES
INIT_SCHEMES = _core.INIT_SCHEMES

__all__ = [
    "gemm",
    "gemm_kernel",
    "available_gemm_kernels",
    "set_gemm_kernel",
    "gemm_config",
    "gemm_configs",
    "set_gemm_config",
    "cpu_info",
    "activation_forward",
    "activation_backward",
    "bias_add_forward",
    "bias_add_backward",
    "bias_activation_forward",
    "activation_bias_backward",
    "mse_forward",
    "mse_backward",
    "sgd_update",
    "loss_forward",
    "loss_backward",
    "count_correct",
    "softmax",
    "grad_norm",
    "sgd_step",
    "adam_step",
    "lamb_step",
    "schedule_factor",
    "init_params",
    "layer_norm",
    "layer_norm_backward",
    "batch_norm",
    "batch_norm_backward",
    "dropout_mask",
    "dropout",
    "dropout_backward",
    "residual_add",
    "sum_into_each",
]


def _inputs(names_and_values):
    arrays = [as_numeric_array(value, name) for name, value in names_and_values]
    dtype = common_float_dtype(*arrays)
    return [np.ascontiguousarray(a, dtype=dtype).reshape(a.shape) for a in arrays], dtype


def _number(value, name: str) -> float:
    """A real number as a float, or TypeError / ValueError naming it."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__} {value!r}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name}: expected a number a float can hold, got {value!r}") from None


def _finite(value, name: str) -> float:
    value = _number(value, name)
    if not np.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return value


def _numbers(**values) -> dict:
    return {name: _number(value, name) for name, value in values.items()}


def _writable(array: np.ndarray, name: str) -> None:
    if not array.flags.writeable:
        raise ValueError(f"{name}: the array is read-only, but it is written in place")


def _apart(array: np.ndarray, out: np.ndarray, same_allowed: bool = False) -> np.ndarray:
    """array, or a copy of it when its bytes overlap ``out``'s (which is written
    while array is read); with same_allowed, array may be ``out`` itself (an
    elementwise kernel reads each element before writing it)."""
    if same_allowed and array.__array_interface__ == out.__array_interface__:
        return array
    return array.copy() if np.may_share_memory(array, out) else array


def _matrix(a: np.ndarray, name: str, dtype: np.dtype, transposed: bool):
    """A matrix the GEMM binding can read (unit column stride), and whether op flips."""
    a = as_numeric_array(a, name)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got shape {a.shape}")
    a = a.astype(dtype, copy=False)
    if a.shape[1] <= 1 or a.strides[1] == a.itemsize:
        if a.shape[0] <= 1 or (a.strides[0] % a.itemsize == 0 and a.strides[0] >= a.shape[1] * a.itemsize):
            return a, transposed
    if a.T.strides[1] == a.itemsize and a.T.strides[0] % a.itemsize == 0 and a.T.strides[0] >= a.shape[0] * a.itemsize:
        return a.T, not transposed  # column-major storage: the same matrix, read as a transpose
    return np.ascontiguousarray(a), transposed


def gemm(a, b, c=None, *, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    """C = alpha · op(a) · op(b) + beta · C, op = transpose when trans_* is set.

    With ``c`` None a new (M, N) array is returned (beta is then irrelevant);
    otherwise ``c`` must be a writable float array with unit column stride and
    is updated in place and returned. An ``a`` or ``b`` that shares memory with
    ``c`` is read as it was before the call (copied first).
    """
    # The common case (ndarrays of one float dtype, read where they lie, nothing
    # to convert, copy or refuse) is checked and run in one C++ call: the checks
    # below cost several times a small product. Anything else returns None there.
    result = _core.gemm_fast_path(a, b, c, alpha, beta, trans_a, trans_b)
    if result is None:
        result = _gemm_checked(a, b, c, alpha, beta, trans_a, trans_b)
    return result


def _gemm_checked(a, b, c, alpha, beta, trans_a, trans_b):
    """gemm for any arguments: converts, copies or raises as its docstring says."""
    a_arr, b_arr = as_numeric_array(a, "a"), as_numeric_array(b, "b")
    arrays = [a_arr, b_arr] if c is None else [a_arr, b_arr, np.asarray(c)]
    dtype = common_float_dtype(*arrays)
    if a_arr.ndim != 2 or b_arr.ndim != 2:
        raise ValueError(f"gemm: a and b must be 2-D, got shapes {a_arr.shape} and {b_arr.shape}")
    m = a_arr.shape[1] if trans_a else a_arr.shape[0]
    n = b_arr.shape[0] if trans_b else b_arr.shape[1]
    a_arr, trans_a = _matrix(a_arr, "a", dtype, bool(trans_a))
    b_arr, trans_b = _matrix(b_arr, "b", dtype, bool(trans_b))
    if c is None:
        c = np.zeros((m, n), dtype=dtype)
        beta = 0.0
    elif not isinstance(c, np.ndarray) or c.dtype != dtype:
        raise TypeError(f"c: expected a {dtype.name} ndarray to update in place, got {type(c).__name__}")
    else:
        _writable(c, "c")
        a_arr, b_arr = _apart(a_arr, c), _apart(b_arr, c)
    _core.gemm(a_arr, b_arr, c, _finite(alpha, "alpha"), _finite(beta, "beta"), trans_a, trans_b)
    return c


def gemm_kernel() -> str:
    """The GEMM micro-kernel in use: "avx512", "avx2" or "portable"."""
    return _core.gemm_kernel()


def available_gemm_kernels() -> list[str]:
    """The GEMM kernels this build has and this CPU can run, best first."""
    return list(_core.gemm_available_kernels())


def set_gemm_kernel(name: str) -> None:
    """Forces a GEMM kernel for the whole process ("auto": the best this CPU runs).

    The environment variable FASTMLP_GEMM_KERNEL sets the first choice the same
    way. Kernels differ in rounding (FMA or not), not in results otherwise.
    """
    check_choice(name, "name", ["auto", *available_gemm_kernels()])
    _core.set_gemm_kernel(name)


def gemm_config() -> dict:
    """The GEMM configuration in use: kernel, blocking per dtype and why it was chosen.

    A dict: ``name`` ("zen4", "skx", ... from the table of measured CPUs;
    "model" when KC and NC come from the analytical model of Low et al. applied
    to this CPU's caches; "default"), ``kernel``, ``source`` ("table", "model",
    "default", or "environment" / "forced" when overridden), ``reason`` (one
    line), and ``float32`` / ``float64``: {"mr", "nr", "kc", "nc", "prefetch"}.
    """
    return _core.gemm_config()


def gemm_configs() -> list[str]:
    """The configurations :func:`set_gemm_config` accepts by name on this CPU."""
    return list(_core.gemm_configs())


def set_gemm_config(spec: str) -> None:
    """Forces the GEMM configuration for the whole process, for tuning and tests.

    ``spec`` is "auto" (the automatic choice, kernel included), a name from
    :func:`gemm_configs` (a table entry such as "skx" brings its own kernel;
    "model" keeps the current one), and/or comma-separated overrides ``kc=N``,
    ``nc=N`` (rounded up to whole panels), ``prefetch=0|1`` ("skx,kc=256";
    overrides alone modify the current kernel's automatic choice). A bad spec
    (unknown name or key, value out of range, empty field, key given twice)
    raises ValueError and changes nothing. The environment variable
    FASTMLP_GEMM_CONFIG sets the first choice the same way. Configurations
    differ only in rounding (KC splits K's sums).
    """
    if not isinstance(spec, str):
        raise TypeError(f"spec: expected a str, got {type(spec).__name__}")
    _core.set_gemm_config(spec)


def cpu_info() -> dict:
    """What CPUID (or sysfs) says about this CPU: vendor, family, model, brand, caches, features."""
    return _core.cpu_info()


def _out(out, like: np.ndarray, name: str = "out") -> np.ndarray:
    """A new array like ``like``, or the given ``out`` checked to be writable."""
    if out is None:
        return np.empty_like(like)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name}: expected an ndarray to write into, got {type(out).__name__}")
    _writable(out, name)
    return out


def activation_forward(z, activation="relu", out=None):
    """a = f(z), elementwise. ``out`` may be z itself."""
    activation = check_choice(activation, "activation", ACTIVATIONS)
    (z,), dtype = _inputs([("z", z)])
    out = _out(out, z)
    _core.activation_forward(activation, _apart(z, out, same_allowed=True), out)
    return out


def _backward_inputs(da, z, a, activation):
    """da, z and a = f(z) in their common dtype; a, when not given, is computed from z
    in that dtype (not in z's own, which may be narrower)."""
    named = [("da", da), ("z", z)] + ([] if a is None else [("a", a)])
    arrays, dtype = _inputs(named)
    if a is None:
        arrays.append(activation_forward(arrays[1], activation))
    return arrays, dtype


def activation_backward(da, z, a=None, activation="relu", out=None):
    """dz = da ⊙ f'(z). ``a`` = f(z) is computed when not given; ``out`` may be da itself."""
    activation = check_choice(activation, "activation", ACTIVATIONS)
    (da, z, a), dtype = _backward_inputs(da, z, a, activation)
    out = _out(out, z)
    _core.activation_backward(activation, _apart(z, out), _apart(a, out), _apart(da, out, same_allowed=True), out)
    return out


def bias_add_forward(z, bias):
    """z + bias for z (B, O) and bias (O,), as a new array."""
    return bias_activation_forward(z, bias, "linear")[0]


def bias_add_backward(dz):
    """Column sums of dz (B, O): the bias gradient (O,)."""
    (dz,), _ = _inputs([("dz", dz)])
    if dz.ndim != 2:
        raise ValueError(f"dz: expected a 2-D array (batch, outputs), got shape {dz.shape}")
    return activation_bias_backward(dz, dz, dz, "linear")[1]


def bias_activation_forward(z, bias, activation="relu"):
    """The fused forward of a dense layer's elementwise part, one pass:
    returns (z + bias, f(z + bias)) for z (B, O) and bias (O,)."""
    activation = check_choice(activation, "activation", ACTIVATIONS)
    (z, bias), dtype = _inputs([("z", z), ("bias", bias)])
    z = z.copy()
    a = np.empty_like(z)
    _core.bias_activation_forward(activation, z, bias, a)
    return z, a


def activation_bias_backward(da, z, a=None, activation="relu"):
    """The fused backward, one pass: returns (dz, d_bias) with dz = da ⊙ f'(z)
    and d_bias the column sums of dz, for da, z, a of shape (B, O)."""
    activation = check_choice(activation, "activation", ACTIVATIONS)
    (da, z, a), dtype = _backward_inputs(da, z, a, activation)
    if da.ndim != 2:
        raise ValueError(f"da: expected a 2-D array (batch, outputs), got shape {da.shape}")
    dz = np.empty_like(da)
    d_bias = np.empty(da.shape[1], dtype=dtype)
    _core.activation_bias_backward(activation, z, a, da, dz, d_bias, False)
    return dz, d_bias


def _same_shape(pred, target):
    (pred, target), dtype = _inputs([("pred", pred), ("target", target)])
    if pred.shape != target.shape:
        raise ValueError(f"pred has shape {pred.shape} but target has shape {target.shape}")
    return pred, target


def mse_forward(pred, target):
    """mean((pred − target)²) over all elements (the loss kernel's "mse")."""
    pred, target = _same_shape(pred, target)
    if pred.size == 0:
        return 0.0
    return loss_forward("mse", pred.reshape(1, -1), target.reshape(1, -1))


def mse_backward(pred, target, scale=None):
    """scale · (pred − target); scale defaults to 2 / pred.size, the gradient of mse_forward
    (then it is the loss kernel's "mse" gradient). A given scale is one NumPy product: the
    loss kernel's (2 / size) · (pred − target) rescaled could overflow where this does not."""
    pred, target = _same_shape(pred, target)
    if scale is None:
        return loss_backward("mse", pred.reshape(1, -1), target.reshape(1, -1)).reshape(pred.shape)
    grad = np.subtract(pred, target, out=np.empty_like(pred))  # an array also for 0-d input
    grad *= grad.dtype.type(_finite(scale, "scale"))
    return grad


def _grads_like(params, grads) -> np.ndarray:
    """grads as a C-contiguous array of params' dtype and shape."""
    grads = as_numeric_array(grads, "grads")
    if grads.shape != params.shape:  # before the conversion, which makes a 0-d array 1-D
        raise ValueError(f"grads has shape {grads.shape} but params has shape {params.shape}")
    return np.ascontiguousarray(grads, dtype=params.dtype)


def sgd_update(params, grads, lr):
    """params −= lr · grads, in place on ``params`` (a writable contiguous float array); returns it.
    The optimizer update's plain SGD (so lr > 0)."""
    if not isinstance(params, np.ndarray) or params.dtype not in (np.float32, np.float64):
        raise TypeError("params: expected a float32 or float64 ndarray to update in place")
    if not params.flags.c_contiguous:
        raise ValueError("params: expected a C-contiguous array (the update is in place)")
    sgd_step(params.reshape(-1), _grads_like(params, grads).reshape(-1), None, lr=lr)
    return params


# ---- training: losses, gradient clipping, optimizers, schedules, initialisers ------------


def _pair_2d(pred, target):
    (pred, target), dtype = _inputs([("pred", pred), ("target", target)])
    if pred.ndim != 2:
        raise ValueError(f"pred: expected a 2-D array (samples, outputs), got shape {pred.shape}")
    if target.shape != pred.shape:
        raise ValueError(f"target has shape {target.shape} but pred has shape {pred.shape}")
    return pred, target


def _weight(weight, pred):
    """A kernel's optional row weights: (B,) (or one number for all) finite and >= 0,
    in pred's dtype (all zero allowed)."""
    if weight is not None and np.ndim(weight) > 1:
        raise ValueError(f"weight: expected one weight per row, shape ({pred.shape[0]},), got shape {np.shape(weight)}")
    return check_sample_weight(weight, "weight", pred.shape[0], pred.dtype, allow_all_zero=True)


def loss_forward(name, pred, target, delta=1.0, weight=None) -> float:
    """The mean loss ``name`` (mse, cross_entropy, binary_cross_entropy, huber) of
    pred (B, O) against dense targets of the same shape; see fastmlp.Network.
    ``weight`` (B,) makes it the weighted mean Σ w_i l_i / Σ w_i (0 when Σ w_i is 0)."""
    check_choice(name, "name", LOSSES)
    pred, target = _pair_2d(pred, target)
    return float(_core.loss(name, pred, target, None, _number(delta, "delta"), _weight(weight, pred)))


def loss_backward(name, pred, target, delta=1.0, weight=None):
    """dL/dpred of :func:`loss_forward`, a new array."""
    check_choice(name, "name", LOSSES)
    pred, target = _pair_2d(pred, target)
    grad = np.empty_like(pred)
    _core.loss(name, pred, target, grad, _number(delta, "delta"), _weight(weight, pred))
    return grad


def count_correct(name, pred, target, weight=None) -> float:
    """How many predictions are right: rows whose argmax matches the target's
    (cross_entropy), or elements with (pred > 0) == (target > 0.5)
    (binary_cross_entropy); 0 for the regression losses. With ``weight`` (B,)
    each right prediction counts its row's weight."""
    check_choice(name, "name", LOSSES)
    pred, target = _pair_2d(pred, target)
    if name == "cross_entropy" and pred.shape[1] == 0 and pred.shape[0] > 0:
        raise ValueError(f"pred: cross_entropy needs at least one column (one per class), got shape {pred.shape}")
    correct = _core.count_correct(name, pred, target, _weight(weight, pred))
    return int(correct) if weight is None else float(correct)


def softmax(z):
    """Row-wise softmax of z (B, O), computed stably."""
    (z,), _ = _inputs([("z", z)])
    if z.ndim != 2:
        raise ValueError(f"z: expected a 2-D array, got shape {z.shape}")
    out = np.empty_like(z)
    _core.softmax(z, out)
    return out


def _clip_value(clip_value) -> float:
    """The engine's encoding: 0 for no clamping; a given clip_value must be > 0."""
    return 0.0 if clip_value is None else check_clip_value(_number(clip_value, "clip_value"))


def grad_norm(grads, clip_value=None) -> float:
    """Global L2 norm of the flat gradient, after clamping to ±clip_value when given."""
    (g,), _ = _inputs([("grads", grads)])
    return float(_core.grad_norm(g.reshape(-1), _clip_value(clip_value)))


def _in_place(params, *others, required: bool = False):
    """Checks the buffers an update writes: params and its state buffers (None: not
    kept, unless required)."""
    if not isinstance(params, np.ndarray) or params.dtype not in (np.float32, np.float64):
        raise TypeError("params: expected a float32 or float64 ndarray to update in place")
    if not params.flags.c_contiguous or params.ndim != 1:
        raise ValueError("params: expected a 1-D C-contiguous array (the update is in place)")
    _writable(params, "params")
    written = [("params", params)]
    for name, state in others:
        if state is None and required:
            raise ValueError(f"{name}: expected a state buffer of the dtype and shape of params, got None")
        if state is None:
            continue
        if not isinstance(state, np.ndarray) or state.dtype != params.dtype or state.shape != params.shape:
            raise ValueError(f"{name}: expected an array of the dtype and shape of params, to update in place")
        if not state.flags.c_contiguous:
            raise ValueError(f"{name}: expected a C-contiguous array (it is updated in place)")
        _writable(state, name)
        for other_name, other in written:
            if np.may_share_memory(state, other):
                raise ValueError(f"{name}: shares memory with {other_name}; each buffer is updated on its own")
        written.append((name, state))
    return [array for _, array in written]


def _segments(segments, n: int) -> list[tuple[int, int]]:
    """LAMB's (offset, size) pairs, sorted, each inside a buffer of n values."""
    pairs = []
    for i, segment in enumerate(segments):
        try:
            offset, size = segment
        except (TypeError, ValueError):
            raise TypeError(f"segments[{i}]: expected a pair (offset, size), got {segment!r}") from None
        offset = check_int(offset, f"segments[{i}] offset", minimum=0, maximum=INT64_MAX)
        size = check_int(size, f"segments[{i}] size", minimum=0, maximum=INT64_MAX)
        if offset + size > n:
            raise ValueError(f"segments[{i}]: offset {offset} + size {size} runs past the end of params ({n} values)")
        pairs.append((offset, size))
    return sorted(pairs)


def _update(config, written, grads, s1, s2, segments, step, lr, grad_scale, clip_value):
    params = written[0]
    grads = _grads_like(params, grads)
    if any(np.may_share_memory(grads, array) for array in written):
        grads = grads.copy()  # read as it was before the update
    lr, grad_scale = _number(lr, "lr"), _number(grad_scale, "grad_scale")
    config = _core.OptimizerConfig(**config, lr=lr, clip_value=_clip_value(clip_value))
    segments = [] if segments is None else _segments(segments, params.size)
    step = check_int(step, "step", minimum=1, maximum=INT64_MAX)
    kept = _core.optimizer_update(config, params, grads, s1, s2, segments, step, lr, grad_scale)
    if kept:
        raise ValueError(f"grads: the update would make {kept} of the {params.size} parameters non-finite "
                         "(grads, lr or params too large, or not finite); those kept their old values")


def sgd_step(params, grads, velocity, *, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0,
             step=1, grad_scale=1.0, clip_value=None):
    """One update of torch.optim.SGD's rule, in place (see fastmlp.SGD)."""
    written = _in_place(params, ("velocity", velocity))
    if momentum != 0 and velocity is None:
        raise ValueError("sgd_step: momentum needs a velocity buffer")
    config = {"kind": "sgd", "nesterov": bool(nesterov),
              **_numbers(momentum=momentum, dampening=dampening, weight_decay=weight_decay)}
    _update(config, written, grads, velocity, None, None, step, lr, grad_scale, clip_value)


def adam_step(params, grads, m, v, *, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step,
              decoupled=False, grad_scale=1.0, clip_value=None):
    """One update of Adam (decoupled=False) or AdamW (True), in place (see fastmlp.Adam)."""
    written = _in_place(params, ("m", m), ("v", v), required=True)
    config = {"kind": "adamw" if decoupled else "adam",
              **_numbers(beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)}
    _update(config, written, grads, m, v, None, step, lr, grad_scale, clip_value)


def lamb_step(params, grads, m, v, *, lr, beta1=0.9, beta2=0.999, eps=1e-6, weight_decay=0.0, step, segments,
              grad_scale=1.0, clip_value=None):
    """One update of LAMB with a trust ratio per segment (offset, size), in place (see fastmlp.LAMB)."""
    written = _in_place(params, ("m", m), ("v", v), required=True)
    config = {"kind": "lamb", **_numbers(beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)}
    _update(config, written, grads, m, v, segments, step, lr, grad_scale, clip_value)


def schedule_factor(spec, step) -> float:
    """The lr multiplier of a schedule spec (a dict, see fastmlp.schedules; None: constant)
    at update ``step`` (0-based)."""
    config = _schedule_config(spec) or _core.ScheduleConfig()
    return float(_core.schedule_factor(config, check_int(step, "step", minimum=0, maximum=INT64_MAX)))


def init_params(layer_sizes, schemes, seed, dtype="float32"):
    """The flat initial parameters the engine draws for these layers, schemes
    (one name, or one per layer) and seed (0 <= seed < 2**64)."""
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__"):
        raise TypeError(f"layer_sizes: expected a sequence of sizes such as [1, 64, 1], got {layer_sizes!r}")
    if len(layer_sizes) < 2:
        raise ValueError(f"layer_sizes: expected at least two sizes (inputs and outputs), got {list(layer_sizes)!r}")
    sizes = [check_int(s, f"layer_sizes[{i}]", minimum=1, maximum=INT64_MAX) for i, s in enumerate(layer_sizes)]
    n_layers = len(sizes) - 1
    if isinstance(schemes, str):
        schemes = [schemes] * n_layers
    elif not hasattr(schemes, "__len__") or isinstance(schemes, bytes):
        raise TypeError(f"schemes: expected a scheme name or one per layer, got {schemes!r}")
    elif len(schemes) != n_layers:
        raise ValueError(f"schemes: expected one scheme name or {n_layers} (one per layer), got {len(schemes)}")
    for i, scheme in enumerate(schemes):
        check_choice(scheme, f"schemes[{i}]", INIT_SCHEMES)
    seed = check_int(seed, "seed", minimum=0, maximum=2**64 - 1)
    core = (_core.Network32 if as_float_dtype(dtype) == np.float32 else _core.Network64)(
        sizes, ["linear"] * n_layers, seed, schemes)
    return np.array(core.params)


# ---- the layers between dense ones: layer norm, batch norm, dropout, residual add ---------


def _rows_and_vectors(kernel: str, matrix_name: str, named):
    """The inputs in their common dtype, contiguous; the first (``matrix_name``) must be 2-D
    (batch, width) and the others 1-D of its width."""
    arrays, dtype = _inputs(named)
    matrix = arrays[0]
    if matrix.ndim != 2:
        raise ValueError(f"{kernel}: {matrix_name} must be 2-D (batch, width), got shape {matrix.shape}")
    for (name, _), array in zip(named[1:], arrays[1:]):
        if array.shape != (matrix.shape[1],):
            raise ValueError(f"{kernel}: {name} has shape {array.shape} but {matrix_name} has "
                             f"{matrix.shape[1]} columns: expected shape ({matrix.shape[1]},)")
    return arrays, dtype


def _eps(eps) -> float:
    eps = _finite(eps, "eps")
    if eps < 0:
        raise ValueError(f"eps: expected a number >= 0, got {eps!r}")
    return eps


def layer_norm(x, gain, bias, eps=1e-5):
    """Layer norm over each row of x (B, W) (torch.nn.LayerNorm over the last dimension):
    returns (y, xhat, rstd) with xhat = (x − mean) · rstd, rstd = 1/√(var + eps) per row
    (biased variance, shape (B,)) and y = gain ⊙ xhat + bias; gain and bias are (W,)."""
    (x, gain, bias), dtype = _rows_and_vectors("layer_norm", "x", [("x", x), ("gain", gain), ("bias", bias)])
    if x.shape[1] == 0 and x.shape[0] > 0:
        raise ValueError(f"layer_norm: x needs at least one column (a row's mean), got shape {x.shape}")
    y, xhat, rstd = np.empty_like(x), np.empty_like(x), np.empty(x.shape[0], dtype=dtype)
    _core.layer_norm_forward(x, gain, bias, xhat, rstd, y, _eps(eps))
    return y, xhat, rstd


def _norm_backward(kernel: str, dy, xhat, rstd, gain, rstd_axis: int):
    (dy, xhat, rstd, gain), dtype = _inputs([("dy", dy), ("xhat", xhat), ("rstd", rstd), ("gain", gain)])
    if dy.ndim != 2:
        raise ValueError(f"{kernel}: dy must be 2-D (batch, width), got shape {dy.shape}")
    if xhat.shape != dy.shape:
        raise ValueError(f"{kernel}: xhat has shape {xhat.shape} but dy has shape {dy.shape}: expected the same shape")
    for name, array, length in (("gain", gain, dy.shape[1]), ("rstd", rstd, dy.shape[rstd_axis])):
        if array.shape != (length,):
            raise ValueError(f"{kernel}: {name} has shape {array.shape} but expected ({length},) "
                             f"for dy of shape {dy.shape}")
    dx, d_gain, d_bias = np.empty_like(dy), np.empty(dy.shape[1], dtype=dtype), np.empty(dy.shape[1], dtype=dtype)
    getattr(_core, kernel)(dy, xhat, rstd, gain, dx, d_gain, d_bias, False)
    return dx, d_gain, d_bias


def layer_norm_backward(dy, xhat, rstd, gain):
    """The gradients of :func:`layer_norm` from dy = dL/dy (B, W) and its saved xhat and
    rstd: returns (dx, d_gain, d_bias) with g = dy ⊙ gain,
    dx = rstd · (g − mean_j g − xhat · mean_j (g ⊙ xhat)) per row,
    d_gain = Σ_rows dy ⊙ xhat and d_bias = Σ_rows dy."""
    return _norm_backward("layer_norm_backward", dy, xhat, rstd, gain, 0)


def batch_norm(x, gain, bias, running_mean=None, running_var=None, *, training=True, eps=1e-5, momentum=0.1):
    """Batch norm over the columns of x (B, W) (torch.nn.BatchNorm1d).

    training=True: the batch's statistics (B >= 2; biased variance), returns
    (y, xhat, rstd) with rstd (W,), and moves running_mean and running_var (both or
    neither; float ndarrays of shape (W,), updated in place) by ``momentum`` as torch does:
    new = (1 − momentum) · old + momentum · batch value, the variance unbiased.
    training=False: returns y = gain ⊙ (x − running_mean) / √(running_var + eps) + bias.
    The running statistics take part in choosing the dtype, as every input does.
    """
    if not isinstance(training, (bool, np.bool_)):
        raise TypeError(f"training: expected True or False, got {training!r}")
    stats = [("running_mean", running_mean), ("running_var", running_var)]
    if not training and (running_mean is None or running_var is None):
        raise ValueError("batch_norm: eval mode (training=False) needs running_mean and running_var")
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: pass both running_mean and running_var, or neither")
    stats = [] if running_mean is None else stats
    if training:
        for name, value in stats:
            if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
                got = f"an ndarray of dtype {value.dtype}" if isinstance(value, np.ndarray) else type(value).__name__
                raise TypeError(f"{name}: expected a float ndarray to update in place in training, got {got}")
            _writable(value, name)
    arrays, dtype = _rows_and_vectors("batch_norm", "x", [("x", x), ("gain", gain), ("bias", bias), *stats])
    (x, gain, bias), kept = arrays[:3], arrays[3:]
    eps = _eps(eps)
    rows, width = x.shape
    if not training:
        y = np.empty_like(x)
        _core.batch_norm_forward_eval(x, gain, bias, *kept, y, eps)
        return y
    momentum = _finite(momentum, "momentum")
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum: expected a number in [0, 1], got {momentum!r}")
    if rows < 2:
        raise ValueError(f"batch norm in training needs at least 2 samples per batch, got {rows} "
                         "(one sample's unbiased variance is undefined): use a larger batch, or training=False")
    written = []
    for array in kept:  # the kernel writes these: copies of any that share memory with what it reads
        if any(np.may_share_memory(array, other) for other in (x, gain, bias, *written)):
            array = array.copy()
        written.append(array)
    y, xhat, rstd = np.empty_like(x), np.empty_like(x), np.empty(width, dtype=dtype)
    _core.batch_norm_forward_train(x, gain, bias, xhat, rstd, y, *(written or [None, None]), eps, momentum)
    for (_, value), array in zip(stats, written):
        if array.__array_interface__ != value.__array_interface__:  # a copy (dtype, layout, overlap)
            value[...] = array
    return y, xhat, rstd


def batch_norm_backward(dy, xhat, rstd, gain):
    """The gradients of :func:`batch_norm` in training from dy = dL/dy (B, W) and its saved
    xhat and rstd (W,): returns (dx, d_gain, d_bias) with g = dy ⊙ gain,
    dx = rstd · (g − mean_rows g − xhat · mean_rows (g ⊙ xhat)) per column,
    d_gain = Σ_rows dy ⊙ xhat and d_bias = Σ_rows dy."""
    dx, d_gain, d_bias = _norm_backward("batch_norm_backward", dy, xhat, rstd, gain, 1)
    return dx, d_gain, d_bias


def _dropout_p(p) -> float:
    p = _number(p, "p")
    if not 0 <= p < 1:
        raise ValueError(f"p: the dropout probability must be in [0, 1), got {p!r}")
    return p


def _mask_shape(n_or_shape) -> tuple:
    if isinstance(n_or_shape, (numbers.Integral, np.integer)) and not isinstance(n_or_shape, (bool, np.bool_)):
        return (check_int(n_or_shape, "n_or_shape", minimum=0, maximum=INT64_MAX),)
    if isinstance(n_or_shape, (str, bytes)) or not hasattr(n_or_shape, "__iter__"):
        raise TypeError(f"n_or_shape: expected a size or a shape tuple, got {n_or_shape!r:.200}")
    return tuple(check_int(s, f"n_or_shape[{i}]", minimum=0, maximum=INT64_MAX) for i, s in enumerate(n_or_shape))


def _rng_state(rng):
    """(words, has_spare, spare) from a seed, a fastmlp.reference.Rng, or a state tuple."""
    from .reference.random import Rng  # the twin's generator, value for value the engine's

    if isinstance(rng, Rng):
        return rng.state()
    if isinstance(rng, (numbers.Integral, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        return Rng(check_int(rng, "rng", minimum=0, maximum=2**64 - 1)).state()
    if not isinstance(rng, (tuple, list)):
        raise TypeError(f"rng: expected a seed, a fastmlp.reference.Rng or a state ((w0, w1, w2, w3), "
                        f"has_spare, spare), got {rng!r:.200}")
    return check_rng_state(tuple(rng), "rng")


def dropout_mask(n_or_shape, p, rng):
    """A dropout mask (uint8, 1 = kept, of shape ``n_or_shape``) drawn as the engine draws
    it (layers.hpp): ⌈n/2⌉ draws of the generator, each giving two elements (low 32 bits,
    then high), kept when below ⌊(1 − p) · 2³²⌋; p = 0 keeps all and draws nothing.

    ``rng`` is a seed (a fresh generator), a state ((w0, w1, w2, w3), has_spare, spare)
    as the engine's and :meth:`fastmlp.reference.Rng.state` give it, or a
    :class:`fastmlp.reference.Rng`, which is advanced past the draws (so successive
    calls give fresh masks, as fastmlp.reference.dropout_mask does with the same Rng).
    """
    from .reference.random import Rng

    shape = _mask_shape(n_or_shape)
    p = _dropout_p(p)
    words, has_spare, spare = _rng_state(rng)
    try:
        mask = np.empty(shape, dtype=np.uint8)
    except (ValueError, MemoryError) as error:
        raise ValueError(f"n_or_shape: no mask of shape {shape} can be made ({error})") from None
    new_words, new_has_spare, new_spare = _core.dropout_mask(list(words), has_spare, spare, p, mask)
    if isinstance(rng, Rng):
        rng.set_state(new_words, new_has_spare, new_spare)
    return mask


def _mask_like(mask, like: np.ndarray) -> np.ndarray:
    mask = as_numeric_array(mask, "mask")
    if mask.shape != like.shape:
        raise ValueError(f"mask has shape {mask.shape} but the input has shape {like.shape}: expected the same shape")
    if mask.dtype != np.bool_ and not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask: expected values 0 and 1 only (1 = kept)")
    return np.ascontiguousarray(mask, dtype=np.uint8)


def dropout(x, mask, p):
    """Inverted dropout: y = x ⊙ mask / (1 − p), mask of x's shape holding 0 and 1."""
    (x,), _ = _inputs([("x", x)])
    y = np.empty_like(x)
    _core.dropout_forward(x, _mask_like(mask, x), _dropout_p(p), y)
    return y


def dropout_backward(dy, mask, p):
    """The gradient of :func:`dropout`: dx = dy ⊙ mask / (1 − p)."""
    (dy,), _ = _inputs([("dy", dy)])
    dx = np.empty_like(dy)
    _core.dropout_backward(dy, _mask_like(mask, dy), _dropout_p(p), dx)
    return dx


def residual_add(x, skip):
    """The residual connection's sum y = x + skip, of equal shapes (its backward passes dy
    to both)."""
    (x, skip), _ = _inputs([("x", x), ("skip", skip)])
    if x.shape != skip.shape:
        raise ValueError(f"residual_add: x has shape {x.shape} but skip has shape {skip.shape}: expected the same shape")
    y = np.empty_like(x)
    _core.residual_add(x, skip, y)
    return y


def sum_into_each(arrays, start=0, stop=None) -> None:
    """In place: elements [start, stop) of every array become their sum across the
    arrays, added in list order ((a0 + a1) + a2) + ... — the reduce that
    data-parallel training runs over the gradients the ranks of one machine keep
    in shared memory (:mod:`fastmlp.distributed`), each rank its own range. The
    arrays: 1-D, C-contiguous, writable, of one dtype (float32 or float64) and
    length, sharing no memory."""
    if not isinstance(arrays, (list, tuple)) or not arrays:
        raise TypeError(f"arrays: expected a non-empty list of arrays, got {arrays!r:.80}")
    for i, array in enumerate(arrays):
        if not isinstance(array, np.ndarray) or array.dtype not in (np.float32, np.float64):
            raise TypeError(f"arrays[{i}]: expected a float32 or float64 ndarray to sum into in place, "
                            f"got {type(array).__name__}" + (f" of {array.dtype}" if isinstance(array, np.ndarray) else ""))
        if array.dtype != arrays[0].dtype:
            raise TypeError(f"arrays[{i}]: dtype {array.dtype}, but arrays[0] has {arrays[0].dtype}: expected one dtype")
        if array.ndim != 1 or not array.flags.c_contiguous:
            raise ValueError(f"arrays[{i}]: expected a 1-D C-contiguous array (it is written in place), "
                             f"got shape {array.shape}" + ("" if array.flags.c_contiguous else ", not contiguous"))
        _writable(array, f"arrays[{i}]")
    n = arrays[0].size
    stop = n if stop is None else check_int(stop, "stop", minimum=0, maximum=n)
    start = check_int(start, "start", minimum=0, maximum=stop)
    _core.sum_into_each(list(arrays), start, stop)
