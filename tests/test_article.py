"""The article's class and demo (shared/seed/backpropagation-article.txt) on fastmlp.

`article_demo` is the article's ``if __name__ == "__main__":`` body, verbatim; the
only change to the article's script is the import: its NeuralNetwork class
definition is replaced by ``from fastmlp import NeuralNetwork``. The rest of the
file holds the class's surface (constructor, attributes, cache, shapes, printing,
np.random draws) and its numbers to the article's own NumPy class, kept below as
the reference.
"""

import ast
import pathlib
import re

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import NeuralNetwork

plt = None  # matplotlib.pyplot, set by the demo test (Agg backend) before the demo runs


def article_demo():
    # Generate synthetic data: y = x^2 + noise
    np.random.seed(42)
    X_train = np.linspace(-2, 2, 100).reshape(-1, 1)
    y_train = X_train**2 + np.random.normal(0, 0.1, X_train.shape)
    
    print("Creating and training neural network...")
    # Network architecture: 1 input -> 64 hidden (ReLU) -> 32 hidden (ReLU) -> 1 output (Linear)
    nn = NeuralNetwork(layer_sizes=[1, 64, 32, 1], learning_rate=0.01, activation='relu')
    
    # Train the network
    losses = nn.train(X_train, y_train, epochs=5000, verbose=True)
    
    # Test the network
    X_test = np.linspace(-2, 2, 50).reshape(-1, 1)
    y_pred = nn.forward(X_test)
    
    # Plot results
    plt.figure(figsize=(12, 5))
    
    plt.subplot(1, 2, 1)
    plt.scatter(X_train, y_train, alpha=0.7, label='Training Data', s=20)
    plt.plot(X_test, y_pred, 'r-', linewidth=2, label='Network Prediction')
    plt.plot(X_test, X_test**2, 'g--', alpha=0.8, label='True Function (x²)')
    plt.xlabel('x')
    plt.ylabel('y')
    plt.title('Function Approximation with Backpropagation')
    plt.legend()
    plt.grid(True, alpha=0.3)
    
    plt.subplot(1, 2, 2)
    plt.plot(losses)
    plt.xlabel('Epoch')
    plt.ylabel('Mean Squared Error Loss')
    plt.title('Training Loss Over Time')
    plt.yscale('log')
    plt.grid(True, alpha=0.3)
    
    plt.tight_layout()
    plt.show()
    
    print(f"\nFinal training loss: {losses[-1]:.6f}")


# ---- the demo ---------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:.*non-interactive.*:UserWarning")
def test_article_demo_runs_and_learns(monkeypatch, capsys):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    monkeypatch.setitem(article_demo.__globals__, "plt", pyplot)
    pyplot.close("all")
    try:
        article_demo()
        figure = pyplot.gcf()
        # The demo keeps its results only in the plot: the loss curve and the prediction.
        losses = np.asarray(figure.axes[1].lines[0].get_ydata(), dtype=np.float64)
        x_test = np.asarray(figure.axes[0].lines[0].get_xdata(), dtype=np.float64).ravel()
        y_pred = np.asarray(figure.axes[0].lines[0].get_ydata(), dtype=np.float64).ravel()
    finally:
        pyplot.close("all")
    out = capsys.readouterr().out

    assert losses.shape == (5000,)
    assert np.isfinite(losses).all()
    final = losses[-1]
    assert final <= 0.015, f"final loss {final}"
    assert abs(final - 0.0100) < 0.001, f"final loss {final}, the article's run gives 0.0100"
    # Decreases overall: each tenth of the run ends lower than the one before.
    tenths = losses.reshape(10, 500).mean(axis=1)
    assert (np.diff(tenths) < 0).all(), tenths
    assert losses[-1] < losses[0] / 10

    # It learned x² on the test grid (noise σ = 0.1).
    assert y_pred.shape == (50,)
    assert np.sqrt(np.mean((y_pred - x_test**2) ** 2)) < 0.2

    lines = out.splitlines()
    assert lines[0] == "Creating and training neural network..."
    epoch_lines = [line for line in lines if line.startswith("Epoch ")]
    assert len(epoch_lines) == 10, out
    for k, line in enumerate(epoch_lines):
        match = re.fullmatch(r"Epoch (\d+), Loss: (\d+\.\d{6})", line)
        assert match, line
        assert int(match.group(1)) == 500 * k
        assert float(match.group(2)) == pytest.approx(losses[500 * k], abs=5e-7)
    assert lines[-1] == f"Final training loss: {final:.6f}"
    assert lines[-2] == ""


# ---- the article's class, as the reference ------------------------------------------------


# The article's class, verbatim, lives in fastmlp.reference (python/fastmlp/reference/article.py).
ArticleNeuralNetwork = fm.reference.NeuralNetwork


def make_pair(layer_sizes, seed=0, **kwargs):
    """fastmlp's NeuralNetwork and the article's, with the same np.random draws."""
    np.random.seed(seed)
    ours = NeuralNetwork(layer_sizes, **kwargs)
    np.random.seed(seed)
    theirs = ArticleNeuralNetwork(layer_sizes, **kwargs)
    return ours, theirs


def regression_data(n=40, inputs=2, outputs=1, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, inputs))
    y = np.concatenate([np.sin(X.sum(axis=1, keepdims=True) * (k + 1)) for k in range(outputs)], axis=1)
    return X, y


# ---- constructor and attributes --------------------------------------------------------------


def test_constructor_attributes():
    nn = NeuralNetwork(layer_sizes=[3, 5, 4, 2], learning_rate=0.05, activation="tanh")
    assert list(nn.layer_sizes) == [3, 5, 4, 2]
    assert nn.learning_rate == 0.05
    assert nn.activation_name == "tanh"
    assert nn.cache == {}
    assert len(nn.weights) == len(nn.biases) == 3
    for w, b, (fan_in, fan_out) in zip(nn.weights, nn.biases, [(3, 5), (5, 4), (4, 2)]):
        assert isinstance(w, np.ndarray) and isinstance(b, np.ndarray)
        assert w.shape == (fan_out, fan_in)
        assert b.shape == (fan_out, 1)
        assert w.dtype == np.float64 and b.dtype == np.float64
        assert np.all(b == 0)


def test_constructor_defaults():
    nn = NeuralNetwork([2, 3, 1])
    assert nn.learning_rate == 0.1
    assert nn.activation_name == "relu"


@pytest.mark.parametrize("seed", [0, 42, 2025])
def test_weights_drawn_from_np_random_as_the_article(seed):
    sizes = [3, 7, 5, 2]
    np.random.seed(seed)
    nn = NeuralNetwork(sizes)
    after_ours = np.random.random()
    np.random.seed(seed)
    expected = [np.random.randn(sizes[i + 1], sizes[i]) * np.sqrt(2.0 / sizes[i]) for i in range(len(sizes) - 1)]
    after_expected = np.random.random()
    for w, e in zip(nn.weights, expected):
        np.testing.assert_array_equal(w, e)
    # It draws exactly what the article draws: the global stream continues at the same place.
    assert after_ours == after_expected


def test_weights_assignment_writes_through():
    X, y = regression_data(n=8, inputs=3, outputs=2)
    np.random.seed(0)
    nn = NeuralNetwork([3, 4, 2])
    new_w = np.arange(12, dtype=np.float64).reshape(4, 3) / 10
    nn.weights[0] = new_w
    nn.biases[1] = np.array([[0.5], [-0.5]])
    np.testing.assert_array_equal(nn.weights[0], new_w)
    assert nn.weights[0] is not new_w  # copied into the network's buffer, not rebound
    np.testing.assert_array_equal(nn.network.weights[0], new_w)
    np.testing.assert_array_equal(nn.network.biases[1], [0.5, -0.5])
    # The network computes with the assigned values.
    hidden = np.maximum(0, X @ new_w.T)
    expected = hidden @ np.asarray(nn.weights[1]).T + np.array([0.5, -0.5])
    np.testing.assert_allclose(nn.forward(X), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r"^parameter 0: expected shape"):
        nn.weights[0] = np.zeros((3, 4))


def test_in_place_edits_write_through():
    X, _ = regression_data(n=5, inputs=2)
    np.random.seed(1)
    nn = NeuralNetwork([2, 3, 1])
    before = nn.forward(X)
    nn.biases[1] += 1.0
    np.testing.assert_allclose(nn.forward(X), before + 1.0, rtol=1e-12)
    nn.weights[1][...] = 0.0
    np.testing.assert_allclose(nn.forward(X), np.ones((5, 1)), rtol=0, atol=0)


# ---- forward, cache, backward, update ------------------------------------------------------------


def test_forward_shape_and_cache():
    X, _ = regression_data(n=6, inputs=3)
    np.random.seed(0)
    nn = NeuralNetwork([3, 5, 4, 2])
    out = nn.forward(X)
    assert out.shape == (6, 2)
    assert set(nn.cache) == {"A0", "Z1", "A1", "Z2", "A2", "Z3", "A3"}
    assert nn.cache["A0"].shape == (3, 6)
    np.testing.assert_array_equal(nn.cache["A0"], X.T)
    for key, rows in [("Z1", 5), ("A1", 5), ("Z2", 4), ("A2", 4), ("Z3", 2), ("A3", 2)]:
        assert nn.cache[key].shape == (rows, 6), key
    np.testing.assert_allclose(nn.cache["A1"], np.maximum(0, nn.cache["Z1"]))
    np.testing.assert_array_equal(nn.cache["A3"], nn.cache["Z3"])  # linear output
    np.testing.assert_allclose(nn.cache["A3"].T, out)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh", "swish"])
def test_forward_backward_match_the_article(activation):
    X, y = regression_data(n=9, inputs=3, outputs=2)
    ours, theirs = make_pair([3, 6, 5, 2], seed=7, activation=activation, learning_rate=0.05)
    out, ref = ours.forward(X), theirs.forward(X)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    for key in theirs.cache:
        np.testing.assert_allclose(ours.cache[key], theirs.cache[key], rtol=1e-12, atol=1e-12, err_msg=key)
    gw, gb = ours.backward(X, y, out)
    rw, rb = theirs.backward(X, y, ref)
    assert isinstance(gw, list) and isinstance(gb, list)
    assert len(gw) == len(gb) == 3
    for g, r, w in zip(gw, rw, ours.weights):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-13)
    for g, r, b in zip(gb, rb, ours.biases):
        assert g.shape == b.shape
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-13)


def test_update_parameters():
    X, y = regression_data(n=9, inputs=3, outputs=2)
    ours, theirs = make_pair([3, 6, 2], seed=4, learning_rate=0.2)
    gw, gb = ours.backward(X, y, ours.forward(X))
    before_w = [w.copy() for w in ours.weights]
    before_b = [b.copy() for b in ours.biases]
    ours.update_parameters(gw, gb)
    for w, w0, g in zip(ours.weights, before_w, gw):
        np.testing.assert_allclose(w, w0 - 0.2 * g, rtol=1e-14, atol=1e-15)
    for b, b0, g in zip(ours.biases, before_b, gb):
        np.testing.assert_allclose(b, b0 - 0.2 * g, rtol=1e-14, atol=1e-15)
    # The update reached the network that computes: same as the article after one step.
    theirs.update_parameters(*theirs.backward(X, y, theirs.forward(X)))
    np.testing.assert_allclose(ours.forward(X), theirs.forward(X), rtol=1e-12, atol=1e-12)


def test_update_parameters_accepts_the_articles_gradients():
    X, y = regression_data(n=9, inputs=3)
    ours, theirs = make_pair([3, 4, 1], seed=5)
    grads = theirs.backward(X, y, theirs.forward(X))
    ours.update_parameters(*grads)
    theirs.update_parameters(*grads)
    for w, r in zip(ours.weights, theirs.weights):
        np.testing.assert_allclose(w, r, rtol=1e-14)


# ---- train ------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_train_matches_the_article(activation):
    X, y = regression_data(n=30, inputs=2, outputs=1)
    ours, theirs = make_pair([2, 16, 8, 1], seed=11, activation=activation, learning_rate=0.05)
    losses = ours.train(X, y, epochs=200, verbose=False)
    reference = theirs.train(X, y, epochs=200, verbose=False)
    assert isinstance(losses, list) and len(losses) == 200
    np.testing.assert_allclose(losses, reference, rtol=1e-9)
    for w, r in zip(ours.weights, theirs.weights):
        np.testing.assert_allclose(w, r, rtol=1e-8, atol=1e-12)
    for b, r in zip(ours.biases, theirs.biases):
        np.testing.assert_allclose(b, r, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("epochs", [1, 7, 10, 25])
def test_train_returns_one_loss_per_epoch(epochs):
    X, y = regression_data(n=20, inputs=2)
    np.random.seed(0)
    nn = NeuralNetwork([2, 8, 1], learning_rate=0.05)
    losses = nn.train(X, y, epochs=epochs, verbose=False)
    assert len(losses) == epochs
    assert all(np.isfinite(v) for v in losses)


def test_train_verbose_false_prints_nothing(capsys):
    X, y = regression_data(n=20, inputs=2)
    np.random.seed(0)
    NeuralNetwork([2, 8, 1]).train(X, y, epochs=50, verbose=False)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_train_verbose_prints_like_the_article(capsys):
    X, y = regression_data(n=20, inputs=2)
    ours, theirs = make_pair([2, 8, 1], seed=2, learning_rate=0.05)
    ours.train(X, y, epochs=30, verbose=True)
    printed = capsys.readouterr().out
    theirs.train(X, y, epochs=30, verbose=True)
    expected = capsys.readouterr().out
    assert printed == expected
    assert [line.split(",")[0] for line in printed.splitlines()] == [f"Epoch {e}" for e in range(0, 30, 3)]


def test_train_continues_from_current_weights():
    X, y = regression_data(n=20, inputs=2)
    ours, theirs = make_pair([2, 8, 1], seed=3, learning_rate=0.05)
    first = ours.train(X, y, epochs=20, verbose=False) + ours.train(X, y, epochs=20, verbose=False)
    reference = theirs.train(X, y, epochs=40, verbose=False)
    np.testing.assert_allclose(first, reference, rtol=1e-10)


def test_forward_after_train_fills_the_cache():
    X, y = regression_data(n=12, inputs=2)
    np.random.seed(0)
    nn = NeuralNetwork([2, 8, 1])
    nn.train(X, y, epochs=5, verbose=False)
    out = nn.forward(X[:4])
    assert out.shape == (4, 1)
    assert nn.cache["A0"].shape == (2, 4)
    assert nn.cache["Z2"].shape == (1, 4)


def test_is_exported():
    assert fm.NeuralNetwork is NeuralNetwork


# ---- public hooks only ------------------------------------------------------------------------


def private_accesses(path):
    """Every ``obj._name`` in a module where obj is not ``self`` (a class's own
    attributes are its business), and every import of fastmlp._core."""
    tree = ast.parse(pathlib.Path(path).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.module in ("_core", "fastmlp._core") or "_core" in names:
                found.append(f"line {node.lineno}: imports _core")
    return sorted(found)


@pytest.mark.parametrize("module", ["article", "gradcheck"])
def test_article_and_gradient_check_use_only_public_hooks(module):
    path = pathlib.Path(fm.__file__).with_name(f"{module}.py")
    assert private_accesses(path) == []


def test_the_private_access_check_finds_what_it_looks_for(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("from . import _core\nclass A:\n    def f(self, net):\n"
                      "        return self._net._core.cache(0), net._grads, self._ok, obj.__class__\n")
    assert sorted(private_accesses(sample)) == ["line 1: imports _core", "line 4: net._grads",
                                                "line 4: self._net._core"]
