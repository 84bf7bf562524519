"""Resuming a fit that has early stopping: the checkpoint keeps its best value, best
epoch and patience count, and the best epoch's parameters when it restores them (the
model file's best_params member), so a fit killed (os._exit in a subprocess) and
resumed ends bit for bit as the uninterrupted one: weights, history, best and stopped
epochs. A fit that had stopped resumes as stopped."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastmlp as fm

# monitor "loss" with a min_delta no epoch beats: the first epoch stays the best, and the
# fit stops after `patience` more (epoch 3 of 8); the watched val_loss variant stops where
# the validation loss stops improving by min_delta.
WATCHERS = {
    "loss": "fm.EarlyStopping(monitor='loss', min_delta=10.0, patience=3, restore_best_weights={restore})",
    "val_loss": "fm.EarlyStopping(patience=2, min_delta=1e-3, restore_best_weights={restore})",
}

SCRIPT = textwrap.dedent("""
    import os, sys
    import numpy as np
    import fastmlp as fm
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((120, 4)), rng.integers(0, 3, 120)
    net = fm.Network([4, 16, 3], loss="cross_entropy", dtype=sys.argv[2], seed=1)
    net.fit(X, y, epochs=8, batch_size=16, optimizer=fm.Adam(lr=3e-2), validation_split=0.25,
            early_stopping={watcher}, checkpoint_every=1, checkpoint_path=sys.argv[1],
            on_epoch_end=lambda epoch, logs: os._exit(3) if epoch == int(sys.argv[3]) else None)
""")


def fit(net, watcher, restore, **kwargs):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((120, 4)), rng.integers(0, 3, 120)
    early = eval(WATCHERS[watcher].format(restore=restore))  # noqa: S307 - the test's own table
    return net.fit(X, y, epochs=8, batch_size=16, optimizer=fm.Adam(lr=3e-2), validation_split=0.25,
                   early_stopping=early, **kwargs)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("watcher", ["loss", "val_loss"])
@pytest.mark.parametrize("restore", [True, False])
def test_a_killed_fit_with_early_stopping_resumed_ends_as_the_uninterrupted_one(dtype, watcher, restore, tmp_path):
    path = tmp_path / "checkpoint.npz"
    whole = fm.Network([4, 16, 3], loss="cross_entropy", dtype=dtype, seed=1)
    expected = fit(whole, watcher, restore)
    assert expected.stopped_epoch is not None and expected.stopped_epoch >= 2  # it stops, after the kill below
    script = SCRIPT.format(watcher=WATCHERS[watcher].format(restore=restore))
    killed = subprocess.run([sys.executable, "-c", script, str(path), dtype, "2"], timeout=120)
    assert killed.returncode == 3  # died in epoch 2's callback: the checkpoint after epoch 1 is there
    assert fm.load(path).metadata["fastmlp.fit"]["epochs_done"] == 2
    resumed = fm.Network([4, 16, 3], loss="cross_entropy", dtype=dtype, seed=1)
    history = fit(resumed, watcher, restore, checkpoint_every=1, checkpoint_path=path, resume_from=path)
    assert np.array_equal(resumed.params, whole.params)
    assert history.history == expected.history and history.epoch == expected.epoch
    assert (history.best_epoch, history.stopped_epoch) == (expected.best_epoch, expected.stopped_epoch)
    # The checkpoint of the epoch it stopped in: resuming from it runs nothing more.
    again = fm.Network([4, 16, 3], loss="cross_entropy", dtype=dtype, seed=1)
    history = fit(again, watcher, restore, resume_from=path)
    assert np.array_equal(again.params, whole.params)
    assert history.history == expected.history
    assert (history.best_epoch, history.stopped_epoch) == (expected.best_epoch, expected.stopped_epoch)


def test_a_checkpoint_without_early_stopping_state_is_refused_for_a_fit_with_it(tmp_path):
    path = tmp_path / "checkpoint.npz"
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((120, 4)), rng.integers(0, 3, 120)
    net = fm.Network([4, 16, 3], loss="cross_entropy", seed=1)
    net.fit(X, y, epochs=2, batch_size=16, checkpoint_every=1, checkpoint_path=path)
    with pytest.raises(ValueError, match=r"another early_stopping"):
        fm.Network([4, 16, 3], loss="cross_entropy", seed=1).fit(X, y, epochs=2, batch_size=16, resume_from=path,
                                                                 early_stopping=True)


def test_best_params_are_checked_when_loaded(tmp_path):
    net = fm.Network([4, 16, 3], loss="cross_entropy", seed=1)
    path = tmp_path / "model.npz"
    bad = net.params.copy()
    bad[3] = np.nan
    fm.io.save(net, path, best_params=bad)
    with pytest.raises(ValueError, match=r"best_params: holds 1 NaN or infinite values"):
        fm.load(path)
    fm.io.save(net, path, best_params=net.params[:-1].copy())
    with pytest.raises(ValueError, match=r"best_params"):
        fm.load(path)
    fm.io.save(net, path, best_params=net.params * 2)
    assert np.array_equal(fm.load(path).params, net.params)
