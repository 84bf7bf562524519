"""The engine's shuffle held to its twin, and to uniformity.

The engine's fit draws each epoch's order with Fisher–Yates over the network's
generator (cpp/src/network.cpp): for i = n−1 down to 1, swap order[i] and
order[below(i + 1)], starting every epoch from 0..n−1. reference.Network.fit draws
the same order from reference.Rng, so shuffled mini-batch fits must agree with the
engine's to rounding; and the permutations themselves must be uniform, which a
twin alone cannot show (a twin written from the same wrong formula would agree).
Sattolo's algorithm (below(i) for below(i + 1): only cyclic permutations) fails
both.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import fastmlp as fm
from fastmlp import reference
from fastmlp.reference.network import shuffled_order

SIZES = [3, 6, 2]
N_SAMPLES = 12


def data(seed):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1, 1, size=(N_SAMPLES, SIZES[0]))
    return X, np.sin(X @ rng.normal(size=(SIZES[0], SIZES[-1])))


def optimizers(kind):
    """(the engine's optimizer, its twin) with the same hyperparameters."""
    if kind == "sgd":
        return fm.SGD(lr=0.05, momentum=0.9), reference.Optimizer("sgd", 0.05, momentum=0.9)
    return fm.Adam(lr=0.01), reference.Optimizer("adam", 0.01)


# ---- the twin: the same draws, the same fit ---------------------------------------------------


def test_the_twin_starts_where_the_engine_does():
    """Built from the same seed and init, the twin draws the engine's weights and ends in
    the engine's generator state; from_network copies that state."""
    net = fm.Network(SIZES, "tanh", dtype="float64", seed=11, init="he_uniform")
    built = reference.Network(SIZES, net.activations, "float64", seed=11, init=net.init)
    copied = reference.Network.from_network(net)
    np.testing.assert_array_equal(built.params, net.params)
    assert built.rng.state() == copied.rng.state()
    assert copied.rng.state() != reference.Rng(11).state(), "the init draws should have moved the generator"


@pytest.mark.parametrize("seed", [0, 5, 2**40 + 3])
@pytest.mark.parametrize("batch_size", [3, 5])  # divides 12; does not (the last batch has 2 rows)
@pytest.mark.parametrize("kind", ["sgd", "adam"])
@pytest.mark.parametrize("per_epoch", [False, True])  # one engine call, or one call per epoch
def test_shuffled_fit_matches_the_twin(seed, batch_size, kind, per_epoch):
    X, y = data(seed % 1000)
    net = fm.Network(SIZES, "tanh", dtype="float64", seed=seed)
    twin = reference.Network.from_network(net)
    engine_optimizer, twin_optimizer = optimizers(kind)
    watch = (lambda epoch, logs: False) if per_epoch else None
    history = net.fit(X, y, epochs=3, batch_size=batch_size, optimizer=engine_optimizer, shuffle=True,
                      on_epoch_end=watch)
    expected = twin.fit(X, y, epochs=3, batch_size=batch_size, optimizer=twin_optimizer, shuffle=True)
    np.testing.assert_allclose(history.history["loss"], expected["loss"], rtol=1e-10)
    np.testing.assert_allclose(history.history["grad_norm"], expected["grad_norm"], rtol=1e-10)
    np.testing.assert_allclose(net.params, twin.params, rtol=1e-10, atol=1e-13)
    assert reference.Network.from_network(net).rng.state() == twin.rng.state(), "a different number of draws"


def test_unshuffled_fit_would_not_match():
    """The check above can see the order: the same fit in X's order ends elsewhere."""
    X, y = data(0)
    net = fm.Network(SIZES, "tanh", dtype="float64", seed=0)
    twin = reference.Network.from_network(net)
    net.fit(X, y, epochs=3, batch_size=5, optimizer=fm.SGD(lr=0.05, momentum=0.9), shuffle=True)
    twin.fit(X, y, epochs=3, batch_size=5, optimizer=reference.Optimizer("sgd", 0.05, momentum=0.9))
    assert not np.allclose(net.params, twin.params, rtol=1e-6, atol=0)


def test_a_full_batch_draws_nothing():
    X, y = data(1)
    twin = reference.Network(SIZES, ["tanh", "linear"], "float64", seed=3)
    before = twin.rng.state()
    twin.fit(X, y, epochs=2, batch_size=N_SAMPLES, shuffle=True)
    assert twin.rng.state() == before


# ---- the engine's order, seen through the public API --------------------------------------------
#
# Network([n, 1], "linear"), X = I_n, y = 1, weights and bias zero, SGD (lr < 1/2), one
# sample per batch, one epoch, MSE. At step t the sample k visited has W[0, k] still 0
# (only sample k's input is nonzero in column k), so its prediction is the bias b_t and
# dL/dŷ = 2 (b_t − 1): W[0, k] ← 2·lr·(1 − b_t), b_{t+1} = b_t + 2·lr·(1 − b_t). Hence
# 1 − b_t = (1 − 2·lr)^t and W[0, k] = 2·lr·(1 − 2·lr)^t, strictly decreasing in t: the
# order of the weights, largest first, is the epoch's order of the samples.

LR = 0.1


def engine_orders(n, seeds):
    """Each seed's first-epoch order of n samples, read off the weights."""
    X, y = np.eye(n), np.ones((n, 1))
    expected = np.sort(2 * LR * (1 - 2 * LR) ** np.arange(n))
    orders = []
    for seed in seeds:
        net = fm.Network([n, 1], "linear", dtype="float64", seed=seed)
        net.params[...] = 0
        net.fit(X, y, epochs=1, batch_size=1, optimizer=fm.SGD(lr=LR), shuffle=True)
        w = net.weights[0][0]
        np.testing.assert_allclose(np.sort(w), expected, rtol=1e-12)  # the reasoning above holds
        orders.append(np.argsort(-w))
    return np.array(orders)


def test_the_engines_order_is_the_twins():
    """Seed by seed, the decoded order is shuffled_order over the twin's generator
    (taken after the init draws, as the engine's is)."""
    n = 7
    seeds = range(40)
    for seed, order in zip(seeds, engine_orders(n, seeds)):
        twin = reference.Network([n, 1], ["linear"], "float64", seed=seed)
        np.testing.assert_array_equal(order, shuffled_order(twin.rng, n), err_msg=f"seed {seed}")


def chi_square_sf_even(x, df):
    """P(χ² > x) for an even number of degrees of freedom df: e^(−x/2) Σ_{j<df/2} (x/2)^j / j!."""
    half = x / 2
    return math.exp(-half) * sum(half**j / math.factorial(j) for j in range(df // 2))


def test_chi_square_sf_even_known_values():
    assert chi_square_sf_even(0.0, 4) == 1.0
    assert chi_square_sf_even(9.487729036781154, 4) == pytest.approx(0.05, rel=1e-9)  # table value
    assert chi_square_sf_even(5.991464547107979, 2) == pytest.approx(0.05, rel=1e-9)


def test_the_engines_permutations_are_uniform():
    """Over 3000 seeds, each position of a 5-sample epoch holds each sample equally often:
    a chi-square test per position (4 degrees of freedom) at α = 1e-6 (a fixed set of
    seeds: the outcome is deterministic). Sattolo's shuffle never leaves a sample in its
    own place: a count of 0 where 600 are expected."""
    n, count = 5, 3000
    orders = engine_orders(n, range(count))
    assert all(sorted(order) == list(range(n)) for order in orders.tolist())
    expected = count / n
    for position in range(n):
        observed = np.bincount(orders[:, position], minlength=n)
        statistic = float(np.sum((observed - expected) ** 2 / expected))
        p_value = chi_square_sf_even(statistic, n - 1)
        assert p_value > 1e-6, f"position {position}: samples seen {observed.tolist()} times (χ² = {statistic:.1f})"
