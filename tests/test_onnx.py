"""ONNX export (issue 12, item 3): the exported graph passes onnx's full check and
onnxruntime predicts as fastmlp does, for every activation × norm × residual, for
regressors and both classifier losses, in float32 and float64."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import fastmlp as fm

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx.reference import ReferenceEvaluator  # noqa: E402
from onnx.reference.op_run import OpRun  # noqa: E402

from fastmlp import onnx_export  # noqa: E402

ATOL = {"float32": 1e-5, "float64": 1e-12}
NORMS = (None, "layer", "batch")
LOSSES = {"mse": 3, "cross_entropy": 3, "binary_cross_entropy": 2}  # loss: outputs


class Gelu(OpRun):
    """ONNX's Gelu (approximate="none"), y = x·(1 + erf(x/√2))/2, in the input's dtype,
    for onnx's reference evaluator: its own goes through a float32 Erf."""

    op_domain = ""

    def _run(self, x, approximate="none"):
        assert approximate == "none", approximate
        erf = np.vectorize(math.erf, otypes=[x.dtype])
        return ((x * (1 + erf(x / math.sqrt(2))) / 2).astype(x.dtype),)


def data(n_inputs: int, loss: str, n_outputs: int, n: int = 96):
    rng = np.random.default_rng(7)
    X = rng.normal(size=(n, n_inputs))
    if loss == "cross_entropy":
        y = rng.integers(0, n_outputs, size=n)
    elif loss == "binary_cross_entropy":
        y = rng.integers(0, 2, size=(n, n_outputs))
    else:
        y = rng.normal(size=(n, n_outputs))
    return X, y


def trained(activation="relu", norm=None, residual=False, loss="mse", dtype="float32", dropout=0.0, epochs=3):
    """A small network fitted a little, so that batch norm's running statistics are
    no longer 0 and 1 and the weights no longer their initial ones."""
    n_outputs = LOSSES[loss]
    net = fm.Network([5, 8, 8, n_outputs], activation=activation, norm=norm, residual=residual, loss=loss,
                     dropout=dropout, dtype=dtype, seed=3)
    X, y = data(5, loss, n_outputs)
    net.fit(X, y, epochs=epochs, batch_size=16, optimizer=fm.Adam(lr=1e-2))
    return net, X.astype(dtype)


def expected(net, X) -> np.ndarray:
    return net.predict_proba(X) if net.is_classifier else net.predict(X)


def run_onnxruntime(model, X) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"X": X})[0]


def uses_gelu(net) -> bool:
    return "gelu" in net.activations


def run_model(model, net, X) -> np.ndarray:
    """onnxruntime's result; onnx's reference evaluator (with a double Gelu) for a
    float64 gelu network, which onnxruntime's CPU provider cannot run (no double Erf)."""
    if net.dtype == np.float64 and uses_gelu(net):
        return ReferenceEvaluator(model, new_ops=[Gelu]).run(None, {"X": X})[0]
    return run_onnxruntime(model, X)


def assert_close(got, want, dtype, what=""):
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    assert got.shape == want.shape, (got.shape, want.shape)
    difference = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
    assert difference <= ATOL[dtype], f"{what}: max |onnx − fastmlp| = {difference:.3g} > {ATOL[dtype]:g}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", list(LOSSES))
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
@pytest.mark.parametrize("norm", NORMS, ids=["no-norm", "layer-norm", "batch-norm"])
@pytest.mark.parametrize("activation", fm.ACTIVATIONS)
def test_onnxruntime_predicts_as_fastmlp(activation, norm, residual, loss, dtype):
    net, X = trained(activation, norm, residual, loss, dtype, dropout=0.1 if residual else 0.0)
    if norm == "batch":
        assert not np.allclose(net.running_means[0], 0) and not np.allclose(net.running_vars[0], 1)
    model = net.to_onnx()
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == (20 if activation == "gelu" else 17)
    assert_close(run_model(model, net, X), expected(net, X), dtype, f"{activation}/{norm}/{residual}/{loss}")


def test_graph_is_made_of_the_documented_operators():
    net, _ = trained("relu", "batch", residual=True, loss="cross_entropy")
    model = net.to_onnx()
    ops = [node.op_type for node in model.graph.node]
    assert ops == ["Gemm", "BatchNormalization", "Relu",
                   "Gemm", "BatchNormalization", "Relu", "Add",
                   "BatchNormalization", "Gemm", "Softmax"]
    initializers = {tensor.name: onnx.numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    gemms = [node for node in model.graph.node if node.op_type == "Gemm"]
    for node, weight, bias in zip(gemms, net.weights, net.biases):
        assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} == {"transB": 1}
        np.testing.assert_array_equal(initializers[node.input[1]], weight)  # (out, in), as fastmlp keeps it
        np.testing.assert_array_equal(initializers[node.input[2]], bias)
    norms = [node for node in model.graph.node if node.op_type == "BatchNormalization"]
    for node, mean, variance in zip(norms, net.running_means, net.running_vars):
        np.testing.assert_array_equal(initializers[node.input[3]], mean)
        np.testing.assert_array_equal(initializers[node.input[4]], variance)
    assert model.producer_name == "fastmlp" and model.producer_version == fm.__version__
    properties = {entry.key: entry.value for entry in model.metadata_props}
    assert properties["fastmlp.loss"] == "cross_entropy"
    assert json.loads(properties["fastmlp.architecture"]) == net.architecture


def test_input_and_output_names_types_and_dynamic_batch():
    for loss, output in [("mse", "predictions"), ("cross_entropy", "probabilities"),
                         ("binary_cross_entropy", "probabilities")]:
        for dtype, element in [("float32", onnx.TensorProto.FLOAT), ("float64", onnx.TensorProto.DOUBLE)]:
            net, X = trained(loss=loss, dtype=dtype, epochs=1)
            graph = net.to_onnx().graph
            (given,), (produced,) = graph.input, graph.output
            assert given.name == "X" and produced.name == output
            for value, width in [(given, net.n_inputs), (produced, net.n_outputs)]:
                assert value.type.tensor_type.elem_type == element
                batch, features = value.type.tensor_type.shape.dim
                assert batch.dim_param == "batch" and features.dim_value == width
    net, X = trained("tanh", "layer", residual=True)
    model = net.to_onnx()
    for rows in (1, 7, 96):
        assert_close(run_onnxruntime(model, X[:rows]), net.predict(X[:rows]), "float32", f"batch of {rows}")


def test_classifier_outputs_are_probabilities():
    net, X = trained("swish", "batch", loss="cross_entropy")
    probabilities = run_onnxruntime(net.to_onnx(), X)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-6)
    np.testing.assert_array_equal(np.argmax(probabilities, axis=1), net.predict(X))
    net, X = trained("gelu", "layer", loss="binary_cross_entropy")
    probabilities = run_onnxruntime(net.to_onnx(), X)
    np.testing.assert_array_equal((probabilities > 0.5).astype(np.int64), net.predict(X))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("opset", [18, 20, 21])
def test_a_newer_opset_on_request(opset, dtype):
    """Opset 18 changed ReduceMean (axes an input; the float64 layer norm uses it)."""
    for norm in NORMS:
        net = fm.Network([4, 6, 6, 2], activation=["leaky_relu", "swish"], norm=norm, residual=True,
                         dtype=dtype, seed=1)
        X, y = data(4, "mse", 2)
        net.fit(X, y, epochs=2, batch_size=16, optimizer=fm.Adam(lr=1e-2))
        model = net.to_onnx(opset=opset)
        assert model.opset_import[0].version == opset
        assert model.ir_version == onnx.helper.find_min_ir_version_for(model.opset_import)
        onnx.checker.check_model(model, full_check=True)
        X = X.astype(dtype)
        assert_close(run_onnxruntime(model, X), net.predict(X), dtype, f"opset {opset}, {norm}")


def test_opset_is_checked():
    net, _ = trained("gelu", epochs=1)
    assert net.to_onnx().opset_import[0].version == onnx_export.GELU_OPSET
    with pytest.raises(ValueError, match="opset: this network needs opset 20 or newer"):
        net.to_onnx(opset=17)
    plain, _ = trained("relu", epochs=1)
    with pytest.raises(ValueError, match="opset: this network needs opset 17 or newer"):
        plain.to_onnx(opset=16)
    with pytest.raises(ValueError, match="opset: the installed onnx"):
        plain.to_onnx(opset=onnx.defs.onnx_opset_version() + 1)
    with pytest.raises(TypeError, match="opset"):
        plain.to_onnx(opset="17")
    with pytest.raises(TypeError):
        plain.to_onnx(None, 17)  # opset is keyword-only


def test_writes_the_file_atomically(tmp_path):
    net, X = trained("sigmoid", "layer", loss="cross_entropy")
    path = tmp_path / "model.onnx"
    model = net.to_onnx(path)
    assert os.listdir(tmp_path) == ["model.onnx"]  # no temporary file left behind
    loaded = onnx.load(str(path))
    assert loaded.SerializeToString() == model.SerializeToString()
    onnx.checker.check_model(str(path), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert_close(session.run(None, {"X": X})[0], net.predict_proba(X), "float32", "from the file")
    net.to_onnx(str(path), opset=19)  # a str path too; replaces the file
    assert onnx.load(str(path)).opset_import[0].version == 19
    with pytest.raises(FileNotFoundError):
        net.to_onnx(tmp_path / "missing" / "model.onnx")
    assert sorted(os.listdir(tmp_path)) == ["model.onnx"]


def test_architectures_beyond_the_shorthand():
    """A norm before any dense layer, a linear activation layer, a residual block of a
    dropout alone (out = 2·in at inference), custom eps values: the layer list as data."""
    architecture = [
        {"type": "batch_norm", "width": 4, "eps": 1e-3},
        {"type": "dense", "inputs": 4, "outputs": 6},
        {"type": "activation", "name": "linear"},
        {"type": "residual", "block": [{"type": "layer_norm", "eps": 1e-4}, {"type": "activation", "name": "swish"},
                                       {"type": "dropout", "p": 0.3}]},
        {"type": "residual", "block": [{"type": "dropout", "p": 0.2}]},
        {"type": "dense", "inputs": 6, "outputs": 6},
        {"type": "activation", "name": "leaky_relu"},
        {"type": "dense", "inputs": 6, "outputs": 2},
        {"type": "activation", "name": "tanh"},
    ]
    for dtype in ("float32", "float64"):
        net = fm.Network.from_architecture(architecture, dtype=dtype, seed=2)
        X, y = data(4, "mse", 2)
        net.fit(X, y, epochs=2, batch_size=16, optimizer=fm.Adam(lr=1e-2))
        model = net.to_onnx()
        onnx.checker.check_model(model, full_check=True)
        X = X.astype(dtype)
        assert_close(run_onnxruntime(model, X), net.predict(X), dtype, f"custom architecture, {dtype}")


def test_float64_gelu_on_onnxruntime():
    """onnxruntime's CPU provider has no double Erf, which its Gelu expands to: the
    float64 gelu graph is valid (the reference evaluator runs it, see above), and the
    float32 copy of the network is what runs on onnxruntime."""
    net, X = trained("gelu", "layer", residual=True, dtype="float64")
    model = net.to_onnx()
    try:
        got = run_onnxruntime(model, X)
    except Exception as error:  # onnxruntime's own exception types are not public
        assert "NOT_IMPLEMENTED" in str(error) and "Erf" in str(error), str(error)
        single = net.astype("float32")
        X32 = X.astype(np.float32)
        assert_close(run_onnxruntime(single.to_onnx(), X32), single.predict(X32), "float32", "float32 copy")
        pytest.skip(f"onnxruntime {ort.__version__} has no double Erf (Gelu): {str(error).splitlines()[0][:120]}")
    assert_close(got, net.predict(X), "float64", "float64 gelu on onnxruntime")


def test_without_onnx_the_import_error_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "fastmlp.onnx_export")
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    net, _ = trained(epochs=1)
    with pytest.raises(ImportError, match=r'pip install "fastmlp\[onnx\]"'):
        net.to_onnx()


def test_importing_fastmlp_does_not_import_onnx():
    code = "import sys, fastmlp; assert 'onnx' not in sys.modules and 'onnxruntime' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_model_beyond_protobufs_limit_is_refused(monkeypatch):
    net, _ = trained(epochs=1)
    monkeypatch.setattr(onnx_export, "MAX_MODEL_BYTES", net.n_params * 4 - 1)
    with pytest.raises(ValueError, match="do not fit in one ONNX file"):
        net.to_onnx()
