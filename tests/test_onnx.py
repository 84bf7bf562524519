"""ONNX export (issue 12, item 3): the exported graph passes onnx's full check and
onnxruntime predicts as fastmlp does, for every activation × norm × residual, for
regressors and both classifier losses, in float32 and float64 (float64 gelu through
the erf/erfc that onnx_export spells out of elementary operators, tested here too)."""

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
from fastmlp import onnx_export  # noqa: E402

ATOL = {"float32": 1e-5, "float64": 1e-12}
NORMS = (None, "layer", "batch")
LOSSES = {"mse": 3, "cross_entropy": 3, "binary_cross_entropy": 2}  # loss: outputs


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
    assert model.opset_import[0].version == (20 if activation == "gelu" and dtype == "float32" else 17)
    assert_close(run_onnxruntime(model, X), expected(net, X), dtype, f"{activation}/{norm}/{residual}/{loss}")


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
    double, _ = trained("gelu", epochs=1, dtype="float64")  # no Gelu operator: the default opset will do
    assert double.to_onnx().opset_import[0].version == onnx_export.DEFAULT_OPSET
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


def sweep() -> np.ndarray:
    """10^5 points of [−40, 40] (past ±38.5 gelu is 0 or z; erfc is subnormal past 26.55)
    and special values: zeros, the subnormal and normal extremes, ±1e300, the pieces'
    ends (0.5, 1, 2, 4, 8) and their neighbours."""
    ends = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 30.0])
    special = np.concatenate([[0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 1e-8, 1e300, 1.7976931348623157e308],
                              ends, np.nextafter(ends, 0), np.nextafter(ends, np.inf),
                              ends * math.sqrt(2), np.nextafter(ends * math.sqrt(2), 0)])
    return np.concatenate([np.linspace(-40, 40, 100_001), special, -special])


def test_erf_of_float64_graphs_on_onnxruntime():
    """The erf/erfc that float64 gelu graphs are built on (onnxruntime's CPU provider has
    no double Erf), run on onnxruntime against math.erf/math.erfc (correctly rounded to
    within an ulp). Measured with onnxruntime 1.32: erf within 2.3e-16 absolute (1 ulp of
    1) and 4.1e-16 relative, erfc within 6.3e-16 relative wherever it is a normal double."""
    x = sweep()
    session = ort.InferenceSession(onnx_export._erf_model().SerializeToString(), providers=["CPUExecutionProvider"])
    erf, erfc = session.run(None, {"x": x})
    want_erf = np.array([math.erf(value) for value in x])
    want_erfc = np.array([math.erfc(value) for value in x])
    assert not np.isnan(erf).any() and not np.isnan(erfc).any()
    absolute = float(np.max(np.abs(erf - want_erf)))
    nonzero = want_erf != 0
    relative = float(np.max(np.abs(erf - want_erf)[nonzero] / np.abs(want_erf[nonzero])))
    normal = want_erfc >= np.finfo(np.float64).tiny
    relative_c = float(np.max(np.abs(erfc - want_erfc)[normal] / want_erfc[normal]))
    absolute_c = float(np.max(np.abs(erfc - want_erfc)))
    assert absolute <= 2.3e-16, f"max |erf − math.erf| = {absolute:.3g}"
    assert relative <= 6e-16, f"max |erf − math.erf| / |math.erf| = {relative:.3g}"
    assert relative_c <= 8e-16, f"max |erfc − math.erfc| / math.erfc (normal) = {relative_c:.3g}"
    assert absolute_c <= 2.3e-16, f"max |erfc − math.erfc| = {absolute_c:.3g}"
    assert np.array_equal(erf[x == 0], x[x == 0]) and np.all(erfc[x == 0] == 1)  # erf(±0) = ±0
    assert np.all(erf[np.abs(x) >= 6] == np.sign(x[np.abs(x) >= 6]))
    assert np.all(erfc[x >= 30] == 0) and np.all(erfc[x <= -6] == 2)


def test_float64_gelu_on_onnxruntime_as_fastmlp():
    """A float64 gelu graph has neither Gelu nor Erf, runs on onnxruntime, and computes
    fastmlp's gelu elementwise over the sweep (a 1 → 1 dense layer of weight 1, bias 0,
    then gelu). Measured with onnxruntime 1.32: within 6.4e-16 relative for |z| ≤ 37
    (where erfc(|z|/√2) is a normal double), 6.4e-314 absolute beyond (both sides'
    erfc subnormal), z or −0 at ±1e300."""
    net = fm.Network.from_architecture([{"type": "dense", "inputs": 1, "outputs": 1},
                                        {"type": "activation", "name": "gelu"}], dtype="float64", seed=0)
    net.weights[0][...] = 1.0
    net.biases[0][...] = 0.0
    model = net.to_onnx()
    assert not {"Gelu", "Erf"} & {node.op_type for node in model.graph.node}
    x = sweep()[:, None]
    got, want = run_onnxruntime(model, x), net.predict(x)
    assert not np.isnan(got).any() and not np.isnan(want).any()
    inside = np.abs(x) <= 37
    relative = float(np.max(np.abs(got - want)[inside] / np.maximum(np.abs(want[inside]), 1e-320)))
    assert relative <= 8e-16, f"max |onnx − fastmlp| / |fastmlp| (gelu, |z| <= 37) = {relative:.3g}"
    beyond = float(np.max(np.abs(got - want)[~inside]))
    assert beyond <= 1e-300, f"max |onnx − fastmlp| (gelu, |z| > 37) = {beyond:.3g}"
    large = np.abs(x) >= 1e300
    np.testing.assert_array_equal(got[large], np.where(x[large] > 0, x[large], -0.0))
    net, X = trained("gelu", "layer", residual=True, dtype="float64")
    assert_close(run_onnxruntime(net.to_onnx(), X), net.predict(X), "float64", "float64 gelu network")


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
