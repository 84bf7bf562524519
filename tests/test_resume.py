"""Checkpoints during a fit and resuming from them: fit(..., checkpoint_every=k,
checkpoint_path=p) and fit(..., resume_from=p). A fit killed (os._exit in a
subprocess) and resumed ends bit for bit as the uninterrupted one."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlp as fm

SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    import fastmlp as fm
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((100, 4)), rng.integers(0, 3, 100)
    net = fm.Network([4, 8, 3], loss="cross_entropy", norm="batch", dtype=sys.argv[2], seed=1)
    net.fit(X, y, epochs=5, batch_size=16, optimizer=fm.Adam(lr=1e-2, schedule=fm.Cosine(50)),
            checkpoint_every=1, checkpoint_path=sys.argv[1],
            on_epoch_end=lambda epoch, logs: os._exit(3) if epoch == 2 else None)
""")


def problem():
    rng = np.random.default_rng(0)
    return rng.standard_normal((100, 4)), rng.integers(0, 3, 100)


def network(dtype="float32"):
    return fm.Network([4, 8, 3], loss="cross_entropy", norm="batch", dtype=dtype, seed=1)


def fit(net, **kwargs):
    X, y = problem()
    return net.fit(X, y, epochs=5, batch_size=16, optimizer=fm.Adam(lr=1e-2, schedule=fm.Cosine(50)), **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_killed_fit_resumed_ends_as_the_uninterrupted_one(dtype, tmp_path):
    path = tmp_path / "checkpoint.npz"
    killed = subprocess.run([sys.executable, "-c", SCRIPT, str(path), dtype], timeout=120)
    assert killed.returncode == 3  # died after its third epoch, the checkpoint of that epoch written
    resumed, whole = network(dtype), network(dtype)
    history = fit(resumed, checkpoint_every=1, checkpoint_path=path, resume_from=path)
    expected = fit(whole)
    assert np.array_equal(resumed.params, whole.params)
    assert np.array_equal(resumed.running_means[0], whole.running_means[0])
    assert history.history == expected.history and history.epoch == expected.epoch
    assert fm.load(path).metadata["fastmlp.fit"]["epochs_done"] == 5


def test_checkpoints_come_every_k_epochs_and_keep_the_users_metadata(tmp_path):
    path = tmp_path / "checkpoint.npz"
    net = network()
    net.metadata = {"mine": 1}
    fit(net, checkpoint_every=2, checkpoint_path=path)  # written after epochs 2 and 4
    saved = fm.load(path)
    assert saved.metadata["fastmlp.fit"]["epochs_done"] == 4 and saved.metadata["mine"] == 1
    assert len(saved.metadata["fastmlp.fit"]["history"]["loss"]) == 4
    assert net.metadata == {"mine": 1}


def test_resuming_a_finished_checkpoint_runs_nothing(tmp_path):
    path = tmp_path / "checkpoint.npz"
    first = network()
    fit(first, checkpoint_every=5, checkpoint_path=path)
    again = network()
    history = fit(again, resume_from=path)
    assert np.array_equal(again.params, first.params) and len(history) == 5


@pytest.mark.parametrize("kwargs, message", [
    ({"checkpoint_every": 2}, r"^checkpoint_every and checkpoint_path: give both"),
    ({"checkpoint_path": "x.npz"}, r"^checkpoint_every and checkpoint_path: give both"),
    ({"checkpoint_every": 0, "checkpoint_path": "x.npz"}, r"^checkpoint_every: expected an integer >= 1"),
    ({"checkpoint_every": 1, "checkpoint_path": "/nonexistent/x.npz"},
     r"^checkpoint_path: cannot write /nonexistent/x\.npz: its folder does not exist"),
])
def test_bad_checkpoint_arguments_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(network(), **kwargs)


def test_what_cannot_be_resumed_is_refused_before_anything_changes(tmp_path):
    path = tmp_path / "checkpoint.npz"
    fit(network(), checkpoint_every=2, checkpoint_path=path)
    X, y = problem()
    net = network()
    before = net.params.copy()
    with pytest.raises(ValueError, match=r"is a checkpoint of a fit of 5 epochs; this fit asks for 7"):
        net.fit(X, y, epochs=7, batch_size=16, resume_from=path)
    with pytest.raises(ValueError, match=r"holds a network of another architecture"):
        fm.Network([4, 9, 3], loss="cross_entropy", norm="batch").fit(X, y, epochs=5, resume_from=path)
    with pytest.raises(ValueError, match=r"is a checkpoint of a fit with another"):
        net.fit(X, y, epochs=5, resume_from=path, validation_split=0.2, early_stopping=True)
    network().save(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match=r"plain\.npz is not a checkpoint of a fit"):
        net.fit(X, y, epochs=5, resume_from=tmp_path / "plain.npz")
    assert np.array_equal(net.params, before)


def test_resuming_with_other_data_or_arguments_is_refused(tmp_path):
    path = tmp_path / "checkpoint.npz"
    fit(network(), checkpoint_every=2, checkpoint_path=path)
    X, y = problem()
    with pytest.raises(ValueError, match=r"checkpoint of a fit with another batch_size"):
        network().fit(X, y, epochs=5, batch_size=7, optimizer=fm.Adam(lr=1e-2, schedule=fm.Cosine(50)),
                      resume_from=path)
    with pytest.raises(ValueError, match=r"checkpoint of a fit with another optimizer"):
        network().fit(X, y, epochs=5, batch_size=16, optimizer=fm.SGD(), resume_from=path)
    with pytest.raises(ValueError, match=r"checkpoint of a fit with another X"):
        network().fit(X[::-1].copy(), y[::-1].copy(), epochs=5, batch_size=16,
                      optimizer=fm.Adam(lr=1e-2, schedule=fm.Cosine(50)), resume_from=path)


def test_a_non_finite_validation_loss_is_kept_in_the_checkpoint(tmp_path):
    """The history's NaN and inf travel through the checkpoint's JSON as their reprs."""
    path = tmp_path / "checkpoint.npz"
    X, y = problem()
    X_val = np.full((4, 4), 3e38, np.float32)
    net = fm.Network([4, 8, 3], loss="cross_entropy", seed=1)
    history = net.fit(X, y, epochs=2, validation_data=(X_val, [0, 1, 2, 0]), checkpoint_every=1,
                      checkpoint_path=path)
    assert not np.isfinite(history["val_loss"]).all()
    resumed = fm.Network([4, 8, 3], loss="cross_entropy", seed=1)
    again = resumed.fit(X, y, epochs=2, validation_data=(X_val, [0, 1, 2, 0]), resume_from=path)
    np.testing.assert_array_equal(again["val_loss"], history["val_loss"])
