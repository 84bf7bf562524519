"""ONNX export (issue 12, item 3): a trained network as a standard ONNX graph.

:func:`to_onnx` (``Network.to_onnx``) writes the inference pass — what ``predict``,
``predict_proba`` and ``decision_function`` compute — with operators from the default
domain only, built with ``onnx.helper``:

=======================  ===============================================================
dense                    ``Gemm(X, W, b, transB=1)``: W kept as fastmlp holds it, (O, I)
layer norm               ``LayerNormalization(axis=-1, epsilon=eps)``: biased variance,
                         eps inside the square root, as fastmlp's
batch norm               ``BatchNormalization(epsilon=eps)`` on the running mean and
                         running variance (the stored, unbiased one), as ``predict``
relu, sigmoid, tanh      ``Relu``, ``Sigmoid``, ``Tanh``
leaky_relu               ``LeakyRelu(alpha=0.01)``, fastmlp's slope
swish                    ``Mul(x, Sigmoid(x))``
gelu                     float32: ``Gelu(approximate="none")`` (opset 20): fastmlp's GELU
                         is the exact x·Φ(x), not the tanh approximation; float64: x·Φ(x)
                         with erfc spelled out of elementary operators (below)
linear, dropout          nothing (dropout is the identity at inference)
residual block           ``Add(block input, block output)``
classifier head          ``Softmax(axis=-1)`` (cross_entropy) or ``Sigmoid``
                         (binary_cross_entropy) on the logits
=======================  ===============================================================

The graph has one input, ``"X"`` of shape (batch, n_inputs), and one output:
``"probabilities"`` (batch, n_outputs) for a classifier (``predict_proba``'s rows),
``"predictions"`` (batch, n_outputs) for a regressor (``predict``); the batch
dimension is dynamic. Tensors have the network's dtype (float or double). The
opset is 17, or 20 when a float32 network's gelu layer needs the ``Gelu`` operator
(a float64 graph has no ``Gelu`` and stays at 17); the IR version is
the lowest that opset allows, so that older runtimes load the file. The model's
metadata_props hold ``fastmlp.loss``, ``fastmlp.architecture`` (the layer list as
JSON) and, when the network has any, ``fastmlp.metadata`` (``net.metadata`` as JSON).

float64 networks: ONNX attributes are floats, never doubles, and 1e-5 or 0.01 as a
float differ from the doubles fastmlp computes with by about 1e-8 relative, enough
to move a double result by 1e-12 and more. So where an attribute is a constant of
the computation, a float64 graph takes it from a double tensor instead: the layer
norm is spelled out as its operator's definition (ReduceMean, Sub, Mul, ReduceMean,
Add eps, Sqrt, Div, Mul gain, Add bias), leaky_relu is ``Max(x, Mul(x, 0.01))``
(for a slope in (0, 1) the same as x > 0 ? x : 0.01·x), and batch norm's running
variance initializer holds ``running_var + (eps − float(eps))`` so that the
operator's sum with its float epsilon is the double ``running_var + eps``.

float64 gelu: onnxruntime's CPU provider (1.32, the version tested) has no double
kernel for ``Erf``, which its ``Gelu`` expands to, so a float64 graph computes
gelu(z) = z·Φ(z), Φ(z) = erfc(−z/√2)/2 as fastmlp's double kernel does
(cpp/src/activation.cpp: ``z·0.5·erfc(z·−0.7071…)``), with erfc made of operators
that onnxruntime runs in double (Abs, Mul, Add, Sub, Div, Min, Max, Less, Where,
Exp, Neg, Cast). With a = |z|·0.70710678118654752440 (the same double as fastmlp's
argument, up to its sign):

* a < 0.5: erf(a) = a·p(a²) (degree 9 in a²), erfc(a) = 1 − erf(a);
* 0.5 ≤ a < 8, on [0.5, 1], [1, 2], [2, 4], [4, 8]: erfc(a) = e^(−a²)·p(s),
  s = (a − c)/h ∈ [−1, 1] (degrees 13, 16, 19, 21), p ≈ erfcx, the scaled erfc;
* a ≥ 8: erfc(a) = e^(−a²)·p(1/a²)/a (degree 9 in 1/a², fitted down to 1/a² = 0);

then Φ(z) = erfc(a)/2 for z < 0, 1 − erfc(a)/2 otherwise. e^(−a²) is
e^(−h²)·e^(−l·(a + h)), h = a rounded to float (Cast there and back) and l = a − h,
so that h² is exact: e^(−a²) keeps its relative accuracy where a² is near 700.
``Where`` evaluates every branch, so each branch's input is clamped to its piece
(and a to 30, past which erfc is 0 in double): no branch overflows or makes a NaN.
The polynomials are our own: truncated Chebyshev expansions computed with mpmath in
50 digits, turned into powers and rounded to double by ``tools/fit_erf.py`` (which
prints the table below and the error of its numpy twin of the graph). Measured in
the graph on onnxruntime 1.32 (tests/test_onnx.py): over 10^5 points of [−40, 40] and
special values (±0, subnormals, ±1e300, the largest double, the pieces' ends), erf
within 2.3e-16 of ``math.erf`` (1 ulp of 1; 4.1e-16 relative) and erfc within 6.3e-16
relative of ``math.erfc`` wherever erfc is a normal double; gelu within 6.4e-16
relative of fastmlp's for |z| ≤ 37 (beyond, both are 0 or subnormal: 6.4e-314
absolute); float64 gelu networks predict within 2.2e-15 of fastmlp, as the other
activations' do. Like fastmlp's, the graph's gelu(−inf) is NaN (−inf·0).
"""

from __future__ import annotations

import json
import os

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'fastmlp.onnx_export needs the onnx package: pip install "fastmlp[onnx]" '
        "(or pip install onnx onnxruntime)"
    ) from error

from ._files import write_atomically
from ._validation import check_int

__all__ = ["to_onnx", "DEFAULT_OPSET", "GELU_OPSET", "LEAKY_RELU_SLOPE"]

DEFAULT_OPSET = 17  # LayerNormalization's first opset
GELU_OPSET = 20  # Gelu's first opset
LEAKY_RELU_SLOPE = 0.01  # cpp/include/fastmlp/activation.hpp: leaky_relu_slope
MAX_MODEL_BYTES = 2**31 - 2**20  # protobuf's 2 GiB limit on one message, less room for the graph
_ELEMENT_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE}
_UNARY = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh"}

# erf/erfc of a ≥ 0 for float64 graphs (the module's docstring; tools/fit_erf.py made these,
# highest power first). Below _ERF_SMALL_END: erf(a) = a·p(a²).
_ERF_SMALL_END = 0.5
_ERF_SMALL = [-1.4621341491012844e-07, 1.6371282597755977e-06, -1.4923005626894847e-05, 0.00012055286259121393,
              -0.0008548326511566567, 0.005223977622024224, -0.026866170645000076, 0.1128379167095487,
              -0.3761263890318375, 1.1283791670955126]
# (centre c, half-width h, p): erfcx(a) = e^(a²)·erfc(a) = p((a − c)/h) on [c − h, c + h].
_ERFCX_MIDDLE = [
    (0.75, 0.25, [-2.149725594007929e-13, 2.5856058450716995e-12, -2.9402385351525456e-11, 3.3060433621918244e-10,
                  -3.580145204643444e-09, 3.7195450918192716e-08, -3.693562169321858e-07, 3.4885738732085394e-06,
                  -3.114966996112698e-05, 0.0002609005567516252, -0.0020286884686699707, 0.014434883221955935,
                  -0.09199317291394885, 0.5069376502931449]),
    (1.5, 0.5, [2.0292151163761165e-13, -1.5120450435636143e-12, 1.0198170166276311e-11, -7.257022501340536e-11,
                5.046602976320114e-10, -3.4059387395134227e-09, 2.232841288007105e-08, -1.4191186124333523e-07,
                8.723044760349276e-07, -5.1713286727694885e-06, 2.9470857452438927e-05, -0.00016081117336992078,
                0.0008360838095667822, -0.00411636316244566, 0.019037759963869347, -0.08181145886628002,
                0.3215854164543175]),
    (3.0, 1.0, [-3.357346034257376e-13, 1.6649372607256146e-12, -6.540314781838702e-12, 3.1649750343485987e-11,
                -1.5396164337943972e-10, 7.206569825011898e-10, -3.312746819938391e-09, 1.4977111542990704e-08,
                -6.646692586156175e-08, 2.8926693017436393e-07, -1.2333677056587265e-06, 5.146436493577689e-06,
                -2.0989464464224638e-05, 8.355413963931287e-05, -0.0003241255444964542, 0.001223039052375977,
                -0.004479431018372594, 0.01588437115987136, -0.05437226000717287, 0.17900115118138996]),
    (6.0, 2.0, [-8.687274616448002e-13, 3.2032954055530958e-12, -7.158040442015914e-12, 2.651140629516173e-11,
                -1.0766502543447741e-10, 3.8896163386294715e-10, -1.3808806453670562e-09, 4.913076211059935e-09,
                -1.7340585360678656e-08, 6.062506288536908e-08, -2.1004717137015923e-07, 7.210766392875884e-07,
                -2.452046979683502e-06, 8.257487439219881e-06, -2.7531014702911937e-05, 9.085053142899829e-05,
                -0.00029664123220980536, 0.0009580615952121846, -0.003059585555764018, 0.009657787464897682,
                -0.030120706978104643, 0.09277656780053835]),
]
# From the last middle piece's end on: erfcx(a) = p(1/a²)/a (p(0) = 1/√π).
_ERFCX_TAIL = [-19291.298757876226, 3934.689704171417, -586.5694179566921, 91.540449131826, -16.660581130251,
               3.702491508811783, -1.0578554629199122, 0.42314218765330025, -0.28209479177387464,
               0.5641895835477563]
_ERFC_ZERO_FROM = 30.0  # erfc(a) rounds to 0 in double past a ≈ 27.3; a is clamped here
_MINUS_SQRT_HALF = -0.70710678118654752440  # cpp/src/activation.cpp: gelu_cdf's factor


class _GraphBuilder:
    """Nodes and initializers in order, each tensor named once."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.nodes: list = []
        self.initializers: list = []
        self._shared: set[str] = set()

    def constant(self, name: str, array, dtype=None) -> str:
        """An initializer holding a copy of ``array`` in ``dtype`` (the network's when None)."""
        array = np.array(array, dtype=self.dtype if dtype is None else dtype, order="C")
        self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def shared(self, name: str, array, dtype=None) -> str:
        """As :meth:`constant`, made once for the whole graph."""
        if name not in self._shared:
            self._shared.add(self.constant(name, array, dtype))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attributes) -> str:
        """Appends ``op(inputs)`` as node ``name``; returns its output's name."""
        output = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [output], name=name, **attributes))
        return output


def _required_opset(architecture: list[dict], dtype: np.dtype) -> int:
    def names(layers):
        for layer in layers:
            if layer["type"] == "residual":
                yield from names(layer["block"])
            elif layer["type"] == "activation":
                yield layer["name"]

    # A float64 graph spells gelu out (no Gelu operator): it needs no newer opset.
    return GELU_OPSET if dtype == np.float32 and "gelu" in names(architecture) else DEFAULT_OPSET


def _check_opset(opset, required: int) -> int:
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return required
    opset = check_int(opset, "opset", minimum=1)
    if opset < required:
        why = ("its gelu layers need the Gelu operator" if required == GELU_OPSET else
               "fastmlp's graphs start at opset 17, LayerNormalization's first")
        raise ValueError(f"opset: this network needs opset {required} or newer ({why}), got {opset}")
    if opset > newest:
        raise ValueError(f"opset: the installed onnx {onnx.__version__} knows opsets up to {newest}, got {opset}")
    return opset


def _layer_norm_double(graph: _GraphBuilder, x: str, gain: str, bias: str, eps: float, prefix: str,
                       opset: int) -> str:
    """Layer norm of a float64 network, spelled out (the LayerNormalization operator's
    own definition): ``(x − mean) / √(var + eps) · gain + bias`` over the last axis,
    the variance biased and two-pass as fastmlp's. Not the operator itself, whose
    epsilon attribute is a float: 1e-5 as a float is 1e-5 − 2.5e-13, which moves a
    double result by 2.5e-13 / (2·(var + eps)) relative, 1e-12 for a row of variance
    0.1 and up to 1e-8 for a row of equal values."""
    eps_name = graph.constant(f"{prefix}.eps", [eps])
    axes = graph.shared("last_axis", [-1], dtype=np.int64) if opset >= 18 else None

    def reduce(source: str, name: str) -> str:
        if axes is not None:  # ReduceMean takes its axes as an input from opset 18 on
            return graph.node("ReduceMean", [source, axes], name, keepdims=1)
        return graph.node("ReduceMean", [source], name, axes=[-1], keepdims=1)

    mean = reduce(x, f"{prefix}_mean")
    centred = graph.node("Sub", [x, mean], f"{prefix}_centred")
    squares = graph.node("Mul", [centred, centred], f"{prefix}_squares")
    variance = reduce(squares, f"{prefix}_variance")
    shifted = graph.node("Add", [variance, eps_name], f"{prefix}_variance_eps")
    deviation = graph.node("Sqrt", [shifted], f"{prefix}_std")
    normalized = graph.node("Div", [centred, deviation], f"{prefix}_normalized")
    scaled = graph.node("Mul", [normalized, gain], f"{prefix}_scaled")
    return graph.node("Add", [scaled, bias], prefix)


def _horner(graph: _GraphBuilder, coefficients: list[float], v: str, prefix: str, constants: str) -> str:
    """p(v), p's coefficients highest power first (initializers ``constants.c0``, …,
    shared by the whole graph), by Horner's rule."""
    result = graph.shared(f"{constants}.c0", coefficients[0])
    for k, c in enumerate(coefficients[1:], start=1):
        product = graph.node("Mul", [result, v], f"{prefix}_times{k}")
        result = graph.node("Add", [product, graph.shared(f"{constants}.c{k}", c)], f"{prefix}_plus{k}")
    return result


def _erf_parts(graph: _GraphBuilder, a: str, prefix: str) -> tuple[str, str, str]:
    """For a float64 tensor ``a`` ≥ 0 (or +inf): (erf(a) where a < 0.5, erfc(a) where
    a ≥ 0.5, the boolean a < 0.5), from double-kernel operators only (the module's
    docstring). Every branch's input is clamped to its piece: ``Where`` evaluates
    them all, and none may overflow or make a NaN."""
    shared = graph.shared

    def constant(name: str, value: float) -> str:
        return shared(f"erf.{name}", value)

    is_small = graph.node("Less", [a, constant("small_end", _ERF_SMALL_END)], f"{prefix}_is_small")
    small = graph.node("Min", [a, constant("small_end", _ERF_SMALL_END)], f"{prefix}_small")
    small_squared = graph.node("Mul", [small, small], f"{prefix}_small_squared")
    polynomial = _horner(graph, _ERF_SMALL, small_squared, f"{prefix}_erf_over_a", "erf.small")
    erf_small = graph.node("Mul", [small, polynomial], f"{prefix}_erf_small")
    clamped = graph.node("Min", [a, constant("zero_from", _ERFC_ZERO_FROM)], f"{prefix}_clamped")
    tail_start = _ERFCX_MIDDLE[-1][0] + _ERFCX_MIDDLE[-1][1]
    tail = graph.node("Max", [clamped, constant("tail_start", tail_start)], f"{prefix}_tail")
    tail_squared = graph.node("Mul", [tail, tail], f"{prefix}_tail_squared")
    inverse_square = graph.node("Div", [constant("one", 1.0), tail_squared], f"{prefix}_tail_inverse_square")
    polynomial = _horner(graph, _ERFCX_TAIL, inverse_square, f"{prefix}_erfcx_tail", "erf.tail")
    scaled = graph.node("Div", [polynomial, tail], f"{prefix}_erfcx_tail")
    for piece in reversed(range(len(_ERFCX_MIDDLE))):  # the first piece whose end a is below wins
        centre, half, coefficients = _ERFCX_MIDDLE[piece]
        name = f"{prefix}_piece{piece}"
        low, high = constant(f"piece{piece}.low", centre - half), constant(f"piece{piece}.high", centre + half)
        inside = graph.node("Min", [graph.node("Max", [a, low], f"{name}_above_low"), high], f"{name}_inside")
        shifted = graph.node("Sub", [inside, constant(f"piece{piece}.centre", centre)], f"{name}_shifted")
        s = graph.node("Mul", [shifted, constant(f"piece{piece}.inverse_half", 1 / half)], f"{name}_s")  # h is 2^k
        polynomial = _horner(graph, coefficients, s, f"{name}_erfcx", f"erf.piece{piece}")
        below = graph.node("Less", [a, high], f"{name}_below_end")
        scaled = graph.node("Where", [below, polynomial, scaled], name)
    # e^(−a²) = e^(−h²)·e^(−l·(a + h)): h = a rounded to float, so h² is exact; l = a − h.
    head = graph.node("Cast", [graph.node("Cast", [clamped], f"{prefix}_to_float", to=TensorProto.FLOAT)],
                      f"{prefix}_head", to=TensorProto.DOUBLE)
    low_part = graph.node("Sub", [clamped, head], f"{prefix}_low_part")
    head_exp = graph.node("Exp", [graph.node("Neg", [graph.node("Mul", [head, head], f"{prefix}_head_squared")],
                                             f"{prefix}_minus_head_squared")], f"{prefix}_head_exp")
    rest = graph.node("Mul", [low_part, graph.node("Add", [clamped, head], f"{prefix}_sum")], f"{prefix}_rest")
    rest_exp = graph.node("Exp", [graph.node("Neg", [rest], f"{prefix}_minus_rest")], f"{prefix}_rest_exp")
    # The small factor last: a result in the subnormal range is rounded once.
    erfc_large = graph.node("Mul", [graph.node("Mul", [scaled, rest_exp], f"{prefix}_erfc_mantissa"), head_exp],
                            f"{prefix}_erfc_large")
    return erf_small, erfc_large, is_small


def _gelu_double(graph: _GraphBuilder, x: str, prefix: str) -> str:
    """gelu(z) = z·Φ(z) of a float64 network without ``Erf`` (no double kernel in
    onnxruntime's CPU provider): Φ(z) = erfc(a)/2 for z < 0, 1 − erfc(a)/2 otherwise,
    a = |z|·(1/√2) — the same double as fastmlp's erfc argument z·(−1/√2), up to its sign."""
    magnitude = graph.node("Abs", [x], f"{prefix}_abs")
    a = graph.node("Mul", [magnitude, graph.shared("gelu.minus_sqrt_half", -_MINUS_SQRT_HALF)], f"{prefix}_a")
    erf_small, erfc_large, is_small = _erf_parts(graph, a, prefix)
    erfc_small = graph.node("Sub", [graph.shared("erf.one", 1.0), erf_small], f"{prefix}_erfc_small")
    erfc = graph.node("Where", [is_small, erfc_small, erfc_large], f"{prefix}_erfc")
    lower = graph.node("Mul", [erfc, graph.shared("gelu.half", 0.5)], f"{prefix}_lower_tail")
    upper = graph.node("Sub", [graph.shared("erf.one", 1.0), lower], f"{prefix}_upper")
    negative = graph.node("Less", [x, graph.shared("gelu.zero", 0.0)], f"{prefix}_negative")
    cdf = graph.node("Where", [negative, lower, upper], f"{prefix}_cdf")
    return graph.node("Mul", [x, cdf], prefix)


def _erf_model() -> "onnx.ModelProto":
    """A float64 model of the erf/erfc that float64 gelu graphs use: input ``"x"`` (a
    vector), outputs ``"erf"`` and ``"erfc"`` — for tests/test_onnx.py, which runs it on
    onnxruntime against ``math.erf``/``math.erfc``."""
    graph = _GraphBuilder(np.dtype(np.float64))
    a = graph.node("Abs", ["x"], "abs")
    erf_small, erfc_large, is_small = _erf_parts(graph, a, "erf")
    one = graph.shared("erf.one", 1.0)
    erf_of_a = graph.node("Where", [is_small, erf_small, graph.node("Sub", [one, erfc_large], "erf_large")],
                          "erf_of_a")
    erfc_of_a = graph.node("Where", [is_small, graph.node("Sub", [one, erf_small], "erfc_small"), erfc_large],
                           "erfc_of_a")
    negative = graph.node("Less", ["x", graph.shared("zero", 0.0)], "negative")
    graph.nodes.append(helper.make_node("Where", [negative, graph.node("Neg", [erf_of_a], "minus_erf"), erf_of_a],
                                        ["erf"], name="erf"))
    reflected = graph.node("Sub", [graph.shared("two", 2.0), erfc_of_a], "reflected")  # erfc(−a) = 2 − erfc(a)
    graph.nodes.append(helper.make_node("Where", [negative, reflected, erfc_of_a], ["erfc"], name="erfc"))
    value = [helper.make_tensor_value_info(name, TensorProto.DOUBLE, ["n"]) for name in ("x", "erf", "erfc")]
    opsets = [helper.make_opsetid("", DEFAULT_OPSET)]
    model = helper.make_model(helper.make_graph(graph.nodes, "fastmlp_erf", value[:1], value[1:], graph.initializers),
                              opset_imports=opsets, ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    return model


def to_onnx(net, path=None, *, opset: int | None = None) -> "onnx.ModelProto":
    """The ONNX model of ``net``'s inference pass (see the module's docstring for the
    graph); written to ``path`` as well when one is given, atomically (a temporary
    file beside it renamed over it). ``opset``: the default domain's opset version,
    None for the lowest the network needs (17, or 20 for a float32 network with
    gelu). The model passes ``onnx.checker.check_model(model, full_check=True)``
    before it is returned."""
    from . import __version__

    net = net.copy()  # one consistent snapshot, even while another thread fits the network
    architecture = net.architecture
    dtype = np.dtype(net.dtype)
    opset = _check_opset(opset, _required_opset(architecture, dtype))
    element_type = _ELEMENT_TYPES[dtype]
    n_bytes = (net.params.size + net.state.size) * dtype.itemsize
    if n_bytes > MAX_MODEL_BYTES:
        raise ValueError(f"net: {n_bytes} bytes of parameters do not fit in one ONNX file "
                         f"(protobuf's limit is 2 GiB)")

    graph = _GraphBuilder(dtype)
    weights, biases = iter(net.weights), iter(net.biases)
    gains, norm_biases = iter(net.norm_gains), iter(net.norm_biases)
    means, variances = iter(net.running_means), iter(net.running_vars)
    index = iter(range(1 << 62))  # numbers the layers of the flat list, as the engine does

    def add(layer: dict, x: str) -> str:
        i, kind = next(index), layer["type"]
        prefix = f"layer{i}_{kind}"
        if kind == "dense":
            w = graph.constant(f"{prefix}.weight", next(weights))  # (O, I)
            b = graph.constant(f"{prefix}.bias", next(biases))  # (O,)
            return graph.node("Gemm", [x, w, b], prefix, transB=1)
        if kind in ("layer_norm", "batch_norm"):
            gain = graph.constant(f"{prefix}.gain", next(gains))
            bias = graph.constant(f"{prefix}.bias", next(norm_biases))
            eps = float(layer["eps"])
            if kind == "layer_norm":
                if dtype == np.float64:
                    return _layer_norm_double(graph, x, gain, bias, eps, prefix, opset)
                return graph.node("LayerNormalization", [x, gain, bias], prefix, axis=-1, epsilon=eps)
            mean = graph.constant(f"{prefix}.running_mean", next(means))
            variance = np.array(next(variances), dtype=np.float64)
            if dtype == np.float64:
                # The epsilon attribute is a float: fold what float(eps) lacks into the variance,
                # so that running_var + eps is summed as predict sums it, in double.
                variance += eps - float(np.float32(eps))
            variance_name = graph.constant(f"{prefix}.running_var", variance)
            return graph.node("BatchNormalization", [x, gain, bias, mean, variance_name], prefix, epsilon=eps)
        if kind == "activation":
            name = layer["name"]
            if name in _UNARY:
                return graph.node(_UNARY[name], [x], f"{prefix}_{name}")
            if name == "leaky_relu":
                if dtype == np.float64:
                    # LeakyRelu's alpha is a float; max(x, slope·x) is x > 0 ? x : slope·x for a
                    # slope in (0, 1), with the slope in double.
                    slope = graph.shared("leaky_relu.slope", [LEAKY_RELU_SLOPE])
                    scaled = graph.node("Mul", [x, slope], f"{prefix}_{name}_scaled")
                    return graph.node("Max", [x, scaled], f"{prefix}_{name}")
                return graph.node("LeakyRelu", [x], f"{prefix}_{name}", alpha=LEAKY_RELU_SLOPE)
            if name == "swish":
                sigmoid = graph.node("Sigmoid", [x], f"{prefix}_swish_sigmoid")
                return graph.node("Mul", [x, sigmoid], f"{prefix}_swish")
            if name == "gelu":
                if dtype == np.float64:
                    return _gelu_double(graph, x, f"{prefix}_{name}")
                return graph.node("Gelu", [x], f"{prefix}_{name}", approximate="none")
            if name == "linear":
                return x
            raise ValueError(f"net: layer {i} has an activation ONNX export does not know: {name!r}")
        if kind == "dropout":
            return x  # the identity at inference
        raise ValueError(f"net: layer {i} is a {kind!r} layer, which ONNX export does not know")

    x = "X"
    for layer in architecture:
        if layer["type"] == "residual":
            block_input = x
            for inner in layer["block"]:
                x = add(inner, x)
            x = graph.node("Add", [block_input, x], f"layer{next(index)}_residual")
        else:
            x = add(layer, x)
    if net.loss == "cross_entropy":
        x = graph.node("Softmax", [x], "head_softmax", axis=-1)
    elif net.loss == "binary_cross_entropy":
        x = graph.node("Sigmoid", [x], "head_sigmoid")
    output = "probabilities" if net.is_classifier else "predictions"
    if graph.nodes and graph.nodes[-1].output[0] == x:
        graph.nodes[-1].output[0] = output  # the last node's output, which no node reads
    else:  # pragma: no cover - every network has a Gemm, so x is the last node's output
        graph.nodes.append(helper.make_node("Identity", [x], [output], name="output"))

    onnx_graph = helper.make_graph(
        graph.nodes,
        "fastmlp_network",
        [helper.make_tensor_value_info("X", element_type, ["batch", net.n_inputs])],
        [helper.make_tensor_value_info(output, element_type, ["batch", net.n_outputs])],
        graph.initializers,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        onnx_graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="fastmlp",
        producer_version=__version__,
        doc_string=f"fastmlp {net!r}",
    )
    properties = {"fastmlp.loss": net.loss, "fastmlp.architecture": json.dumps(architecture)}
    metadata = getattr(net, "metadata", None)  # the user's own (JSON-able) metadata, when there is some
    if metadata:
        properties["fastmlp.metadata"] = json.dumps(metadata)
    helper.set_model_props(model, properties)
    onnx.checker.check_model(model, full_check=True)
    if path is not None:
        data = model.SerializeToString()
        write_atomically(os.fspath(path), lambda stream: stream.write(data))
    return model
