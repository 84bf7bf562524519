"""`fastmlp demo deep` and the diagnosis it shows: a 20-hidden-layer sigmoid network
vanishes from its first layers and stalls at the variance of y; the same depth with
relu, residual blocks and layer norm trains, and its diagnosis is "ok" everywhere."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from fastmlp import cli
from fastmlp.demos import deep

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEED = 42  # the demo's default


def run_cli(capsys, *argv):
    code = cli.main([os.fspath(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


@pytest.fixture(scope="module")
def default_run():
    """The demo's own run (default epochs and seed), trained once for the module."""
    return deep.run(seed=SEED)


def test_the_sigmoid_network_vanishes_from_its_first_layers_and_stalls(default_run):
    sigmoid = default_run.runs[0]
    assert sigmoid.name == "sigmoid"
    verdicts = sigmoid.diagnosis.verdicts
    assert len(verdicts) == deep.DEPTH + 1
    assert verdicts[:10] == ["vanishing"] * 10, sigmoid.diagnosis
    assert verdicts[-1] == "ok"
    norms = [r.grad_norm for r in sigmoid.diagnosis.layers]
    assert norms[0] < 1e-9 * norms[-2], sigmoid.diagnosis
    # It learns only the mean of y: its loss stays at y's variance.
    assert sigmoid.losses[-1] > 0.9 * default_run.y_variance


def test_the_residual_layer_norm_network_is_ok_everywhere_before_training():
    X, y = deep.make_data(SEED)
    networks = deep.make_networks(SEED)
    residual = networks["relu + residual + layer norm"].diagnose(X, y)
    assert residual.verdicts == ["ok"] * (deep.DEPTH + 1), residual
    sigmoid = networks["sigmoid"].diagnose(X, y)
    assert sigmoid.verdicts[:10] == ["vanishing"] * 10, sigmoid


def test_the_residual_layer_norm_network_is_ok_everywhere_and_trains(default_run):
    residual = default_run.runs[1]
    assert residual.name == "relu + residual + layer norm"
    assert residual.diagnosis.verdicts == ["ok"] * (deep.DEPTH + 1), residual.diagnosis
    assert residual.losses[-1] < 0.1 * default_run.y_variance
    assert residual.losses[-1] < 0.1 * default_run.runs[0].losses[-1]


def test_the_same_seed_gives_the_same_runs():
    first, second = deep.run(epochs=2, seed=7), deep.run(epochs=2, seed=7)
    for a, b in zip(first.runs, second.runs):
        assert a.losses == b.losses
        assert a.diagnosis.to_dict() == b.diagnosis.to_dict()
        np.testing.assert_array_equal(a.network.params, b.network.params)


def test_demo_deep_prints_both_diagnoses_and_writes_nothing_with_no_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, lines, err = run_cli(capsys, "demo", "deep", "--epochs", "3", "--no-plot")
    assert code == 0, err
    assert err == ""
    assert lines[0].startswith(f"Two networks of {deep.DEPTH} hidden layers")
    assert sum(line.startswith("sigmoid: loss ") for line in lines) == 1
    assert sum(line.startswith("relu + residual + layer norm: loss ") for line in lines) == 1
    assert sum(line.startswith("Diagnosis after training (") for line in lines) == 2
    assert sum(line.startswith("layer  shape") for line in lines) == 2  # the two tables' headers
    assert "(epoch 3)" in lines[2]
    assert lines[-1].startswith("Final training loss: sigmoid ")
    assert list(tmp_path.iterdir()) == []


def test_demo_deep_writes_one_picture(tmp_path, capsys):
    matplotlib_image = pytest.importorskip("matplotlib.image")
    out = tmp_path / "deep.png"
    code, lines, err = run_cli(capsys, "demo", "deep", "--epochs", "3", "--seed", "1", "--out", out)
    assert code == 0, err
    assert lines[-1] == f"Picture: {out}"
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert matplotlib_image.imread(out).shape[:2] == (500, 1200)  # figsize (12, 5) at 100 dpi
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.png"]  # no temporary left behind


def test_demo_deep_without_matplotlib_says_how_to_get_the_picture(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    out = tmp_path / "deep.png"
    code, lines, err = run_cli(capsys, "demo", "deep", "--epochs", "2", "--out", out)
    assert code == 0
    assert err == ""
    assert lines[-2].startswith("Final training loss: ")
    assert 'pip install "fastmlp[plot]"' in lines[-1] and "skipped" in lines[-1]
    assert not out.exists()


def test_demo_article_is_still_the_default(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    default = run_cli(capsys, "demo", "--epochs", "5", "--no-plot")
    named = run_cli(capsys, "demo", "article", "--epochs", "5", "--no-plot")
    assert default[0] == named[0] == 0
    assert default[1][:6] == named[1][:6]  # the same epochs and final loss; the time differs
    assert default[1][0].startswith("Epoch 0, Loss: ")


def test_demo_of_an_unknown_name_is_a_usage_error(capsys):
    code, lines, err = run_cli(capsys, "demo", "shallow")
    assert code == 2
    assert "invalid choice: 'shallow'" in err
