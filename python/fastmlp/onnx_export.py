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
gelu                     ``Gelu(approximate="none")`` (opset 20): fastmlp's GELU is the
                         exact x·Φ(x), not the tanh approximation
linear, dropout          nothing (dropout is the identity at inference)
residual block           ``Add(block input, block output)``
classifier head          ``Softmax(axis=-1)`` (cross_entropy) or ``Sigmoid``
                         (binary_cross_entropy) on the logits
=======================  ===============================================================

The graph has one input, ``"X"`` of shape (batch, n_inputs), and one output:
``"probabilities"`` (batch, n_outputs) for a classifier (``predict_proba``'s rows),
``"predictions"`` (batch, n_outputs) for a regressor (``predict``); the batch
dimension is dynamic. Tensors have the network's dtype (float or double). The
opset is 17, or 20 when a gelu layer needs the ``Gelu`` operator; the IR version is
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

onnxruntime's CPU provider (1.32, the version tested) has no double kernel for
``Erf``, which its ``Gelu`` expands to: a float64 network with gelu exports
correctly, but onnxruntime refuses to load it (``NOT_IMPLEMENTED``). Export ``net.astype("float32")`` for onnxruntime,
or run the float64 model elsewhere (onnx's reference evaluator, with a double
``Erf``, is how the tests check it).
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


def _required_opset(architecture: list[dict]) -> int:
    def names(layers):
        for layer in layers:
            if layer["type"] == "residual":
                yield from names(layer["block"])
            elif layer["type"] == "activation":
                yield layer["name"]

    return GELU_OPSET if "gelu" in names(architecture) else DEFAULT_OPSET


def _check_opset(opset, required: int) -> int:
    newest = onnx.defs.onnx_opset_version()
    if opset is None:
        return required
    opset = check_int(opset, "opset", minimum=1)
    if opset < required:
        why = "the Gelu operator" if required == GELU_OPSET else "the LayerNormalization operator"
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


def to_onnx(net, path=None, *, opset: int | None = None) -> "onnx.ModelProto":
    """The ONNX model of ``net``'s inference pass (see the module's docstring for the
    graph); written to ``path`` as well when one is given, atomically (a temporary
    file beside it renamed over it). ``opset``: the default domain's opset version,
    None for the lowest the network needs (17, or 20 with gelu). The model passes
    ``onnx.checker.check_model(model, full_check=True)`` before it is returned."""
    from . import __version__

    net = net.copy()  # one consistent snapshot, even while another thread fits the network
    architecture = net.architecture
    opset = _check_opset(opset, _required_opset(architecture))
    dtype = np.dtype(net.dtype)
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
