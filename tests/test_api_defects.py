"""Defects of the Python API found by probing (issue 9): each test here fails on the
code before the fix.

- #5: values finite in float64 but too large for a float32 network (1e300) were
  checked before the cast, so they became inf inside the engine;
- #7: a pickled network's state was restored with little validation;
- #9: big integers gave pybind11 signature dumps or "Unable to cast".
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import fastmlp as fm

# ---- #5: finiteness after the cast to the network's dtype -----------------------------------------


def overflow_data(where, value=1e300):
    """(X, y) for a [3, 4, 2] network with one ``value`` (finite in float64, too large
    for float32) in X or (negated) in y, or in neither."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 3))
    y = rng.standard_normal((6, 2))
    if where == "X":
        X[2, 1] = value
    elif where == "y":
        y[4, 0] = -value
    return X, y


def call(net, method, X, y):
    """Runs `method` of net with X and y (in the argument the method names)."""
    if method == "predict":
        return net.predict(X)
    if method == "predict_proba":
        return net.predict_proba(X)
    if method == "decision_function":
        return net.decision_function(X)
    if method == "forward":
        return net.forward(X)
    if method == "evaluate":
        return net.evaluate(X, y)
    if method == "score":
        return net.score(X, y)
    slow = fm.SGD(lr=1e-90)  # a float64 network's loss stays finite with such inputs
    if method == "fit":
        return net.fit(X, y, epochs=2, batch_size=2, optimizer=slow)
    if method == "partial_fit":
        return net.partial_fit(X, y, optimizer=slow)
    if method == "fit_validation":
        clean_X, clean_y = overflow_data("neither")
        return net.fit(clean_X, clean_y, validation_data=(X, y), optimizer=slow)
    if method == "backward":
        clean_X, _ = overflow_data("neither")
        return net.backward(clean_X, y, net.forward(clean_X))
    if method == "backward_y_pred":
        clean_X, clean_y = overflow_data("neither")
        net.forward(clean_X)
        return net.backward(clean_X, clean_y, y)
    if method == "backward_output":
        clean_X, _ = overflow_data("neither")
        net.forward(clean_X)
        return net.backward_output(clean_X, y)
    raise AssertionError(method)


X_METHODS = ["predict", "decision_function", "forward", "evaluate", "score", "fit", "partial_fit",
             "fit_validation"]
Y_METHODS = ["evaluate", "score", "fit", "partial_fit", "fit_validation", "backward", "backward_y_pred",
             "backward_output"]
CASES = [("X", m) for m in X_METHODS] + [("y", m) for m in Y_METHODS]
NAMES = {("X", "fit_validation"): "validation_data X", ("y", "fit_validation"): "validation_data y",
         ("y", "backward_y_pred"): "y_pred", ("y", "backward_output"): "d_output"}


@pytest.mark.parametrize("where,method", CASES)
def test_values_that_overflow_float32_are_refused_by_name(where, method):
    X, y = overflow_data(where)
    net = fm.Network([3, 4, 2], seed=0, dtype="float32")
    before = net.params.copy()
    name = NAMES.get((where, method), where)
    with pytest.raises(ValueError, match=rf"^{name}: 1 values overflow float32 .*such as -?1e\+300"):
        call(net, method, X, y)
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("where,method", CASES)
def test_values_just_over_float32_are_refused_by_name(where, method):
    X, y = overflow_data(where, 1e39)
    net = fm.Network([3, 4, 2], seed=0, dtype="float32")
    with pytest.raises(ValueError, match=rf"^{NAMES.get((where, method), where)}: 1 values overflow float32"):
        call(net, method, X, y)


@pytest.mark.parametrize("where,method", CASES)
def test_the_same_values_work_in_a_float64_network(where, method):
    X, y = overflow_data(where, 1e39)
    net = fm.Network([3, 4, 2], seed=0, dtype="float64")
    result = call(net, method, X, y)
    if isinstance(result, fm.History):
        assert np.isfinite(result.history["loss"]).all()
    elif isinstance(result, dict):
        assert np.isfinite(result["loss"])


@pytest.mark.parametrize("loss,method", [("binary_cross_entropy", "predict_proba"),
                                         ("binary_cross_entropy", "predict"),
                                         ("cross_entropy", "predict")])
def test_classifiers_refuse_overflowing_inputs_too(loss, method):
    X, y = overflow_data("X")
    net = fm.Network([3, 4, 2], loss=loss, seed=0)
    with pytest.raises(ValueError, match=r"^X: 1 values overflow float32"):
        call(net, method, X, y)


def test_overflow_is_counted_in_large_inputs_and_nan_keeps_its_message():
    X = np.zeros((30000, 3))  # over the size where the check sums instead of testing each value
    X[::1000, 0] = 1e39
    net = fm.Network([3, 2], seed=0)
    with pytest.raises(ValueError, match=r"^X: 30 values overflow float32 .*such as 1e\+39"):
        net.predict(X)
    X[5, 2] = np.nan
    with pytest.raises(ValueError, match=r"^X: expected finite values, found 1 NaN or inf"):
        net.predict(X)
    X[:] = 3e38  # below float32's largest: accepted
    assert net.decision_function(X[:10]).shape == (10, 2)


def test_an_overflowing_binary_target_is_refused_by_name():
    X, _ = overflow_data("neither")
    net = fm.Network([3, 2], loss="binary_cross_entropy", seed=0)
    with pytest.raises(ValueError, match=r"^y: 2 values overflow float32"):
        net.fit(X, np.where(np.eye(6, 2) > 0, 1e300, 0.0))


# ---- #7: a pickled network's state is validated field by field ------------------------------------


class Crafted:
    """Pickles as the given reduce tuple: a hand-made payload for pickle.loads."""

    def __init__(self, reduced):
        self.reduced = reduced

    def __reduce__(self):
        return self.reduced


def trained(optimizer=None, dtype="float32"):
    rng = np.random.default_rng(1)
    net = fm.Network([3, 4, 2], seed=5, dtype=dtype)
    net.fit(rng.standard_normal((12, 3)), rng.standard_normal((12, 2)), epochs=2, batch_size=4,
            optimizer=optimizer or fm.Adam(lr=0.01))
    return net


def crafted_args(net, edit):
    """net.__reduce__()'s arguments as a list (state tuples as lists), after ``edit(args)``."""
    rebuild, args = net.__reduce__()
    args = list(args)
    args[4] = list(args[4])
    args[5] = list(args[5])
    edit(args)
    return rebuild, tuple(args)


def set_params(value):
    def edit(args):
        args[3] = value(args[3]) if callable(value) else value
    return edit


def set_optimizer_field(index, value):
    def edit(args):
        args[4][index] = value(args[4][index]) if callable(value) else value
    return edit


def set_rng_field(index, value):
    def edit(args):
        args[5][index] = value
    return edit


def with_nan(array, index=0):
    array = np.array(array)
    array.flat[index] = np.nan
    return array


BAD_STATES = {
    "params-scalar": (set_params(np.float32(0.5)), ValueError, r"^params: expected shape \(26,\)"),
    "params-0d-array": (set_params(np.array(0.5, dtype=np.float32)), ValueError, r"^params: expected shape \(26,\)"),
    "params-short": (set_params(lambda p: p[:-1]), ValueError, r"^params: expected shape \(26,\).*got \(25,\)"),
    "params-2d": (set_params(lambda p: p.reshape(2, 13)), ValueError, r"^params: expected shape \(26,\)"),
    "params-nan": (set_params(with_nan), ValueError, r"^params: expected finite values, found 1 NaN"),
    "params-inf": (set_params(lambda p: np.where(np.arange(26) == 3, np.inf, p)), ValueError,
                   r"^params: expected finite values"),
    "params-overflow": (set_params(lambda p: np.where(np.arange(26) == 3, 1e300, p.astype(np.float64))), ValueError,
                        r"^params: 1 values overflow float32"),
    "params-strings": (set_params(np.array(["a"] * 26)), TypeError, r"^params: expected real numbers"),
    "steps-negative": (set_optimizer_field(2, -1), ValueError, r"^optimizer_state steps: expected an integer >= 0"),
    "steps-2**63": (set_optimizer_field(2, 2**63), ValueError, r"^optimizer_state steps: .*<= 4611686018427387904, "
                                                               r"got 9223372036854775808"),
    "steps-2**62+1": (set_optimizer_field(2, 2**62 + 1), ValueError,
                      r"^optimizer_state steps: .*<= 4611686018427387904"),
    "steps-float": (set_optimizer_field(2, 3.0), TypeError, r"^optimizer_state steps: expected an integer"),
    "kind-unknown": (set_optimizer_field(1, "rmsprop"), ValueError, r"^optimizer_state kind: expected one of"),
    "kind-other-rule": (set_optimizer_field(1, "sgd"), ValueError, r"^optimizer_state kind: 'sgd' is not the rule"),
    "optimizer-not-one": (set_optimizer_field(0, "adam"), TypeError, r"^optimizer_state optimizer: expected an "
                                                                   r"optimizer"),
    "no-optimizer-but-state": (set_optimizer_field(0, None), ValueError, r"^optimizer_state: holds update counts"),
    "buffers-count": (set_optimizer_field(3, lambda b: b[:1]), ValueError,
                      r"^optimizer_state buffers: Adam\(.*\) keeps 2 buffers, got 1"),
    "buffers-not-list": (set_optimizer_field(3, np.zeros(26)), TypeError, r"^optimizer_state buffers: expected a list"),
    "buffer-shape": (set_optimizer_field(3, lambda b: [b[0], b[1][:5]]), ValueError,
                     r"^optimizer_state buffers\[1\]: expected shape \(26,\)"),
    "buffer-scalar": (set_optimizer_field(3, lambda b: [np.float32(0), b[1]]), ValueError,
                      r"^optimizer_state buffers\[0\]: expected shape \(26,\)"),
    "buffer-nan": (set_optimizer_field(3, lambda b: [b[0], with_nan(b[1], 7)]), ValueError,
                   r"^optimizer_state buffers\[1\]: expected finite values"),
    "optimizer-lr-nan": (set_optimizer_field(0, lambda o: setattr(o, "lr", float("nan")) or o), ValueError,
                         r"^optimizer_state optimizer: not a valid Adam: .*lr"),
    "optimizer-fields-gone": (set_optimizer_field(0, lambda o: delattr(o, "betas") or o), ValueError,
                              r"^optimizer_state optimizer: not a valid Adam"),
    "optimizer-schedule": (set_optimizer_field(0, lambda o: setattr(o, "schedule", "cosine") or o), ValueError,
                           r"^optimizer_state optimizer: not a valid Adam"),
    "optimizer-state-shape": (lambda args: args.__setitem__(4, ("adam", 3)), ValueError,
                              r"^optimizer_state: expected \(optimizer, kind, steps, buffers\)"),
    "rng-three-words": (set_rng_field(0, (1, 2, 3)), ValueError, r"^rng_state words: expected 4 integers"),
    "rng-word-2**64": (set_rng_field(0, (1, 2, 3, 2**64)), ValueError,
                       r"^rng_state words\[3\]: .*<= 18446744073709551615"),
    "rng-word-negative": (set_rng_field(0, (1, -2, 3, 4)), ValueError,
                          r"^rng_state words\[1\]: expected an integer >= 0"),
    "rng-word-float": (set_rng_field(0, (1, 2.0, 3, 4)), TypeError, r"^rng_state words\[1\]: expected an integer"),
    "rng-all-zero": (set_rng_field(0, (0, 0, 0, 0)), ValueError, r"^rng_state words: all four are zero"),
    "rng-has-spare": (set_rng_field(1, "yes"), TypeError, r"^rng_state has_spare: expected True or False"),
    "rng-spare-nan": (set_rng_field(2, float("nan")), ValueError, r"^rng_state spare: expected a finite number"),
    "rng-spare-inf": (set_rng_field(2, float("inf")), ValueError, r"^rng_state spare: expected a finite number"),
    "rng-shape": (lambda args: args.__setitem__(5, (1, 2, 3, 4)), ValueError, r"^rng_state: expected \(\(w0"),
    "dtype": (lambda args: args.__setitem__(2, "float16"), ValueError, r"^dtype: expected 'float32' or 'float64'"),
    "architecture": (lambda args: args[0][0].__setitem__("outputs", 0), ValueError,
                     r"^architecture\[0\] outputs: expected an integer >= 1"),
    "settings-key": (lambda args: args[1].__setitem__("dropout", 0.5), ValueError, r"^settings: expected a dict"),
    "settings-value": (lambda args: args[1].__setitem__("loss", "hinge"), ValueError, r"^loss: expected one of"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATES))
@pytest.mark.parametrize("how", ["rebuild", "pickle.loads"])
def test_a_bad_pickled_state_is_refused_naming_the_field(case, how):
    edit, error, message = BAD_STATES[case]
    rebuild, args = crafted_args(trained(), edit)
    with pytest.raises(error, match=message):
        if how == "rebuild":
            rebuild(*args)
        else:
            pickle.loads(pickle.dumps(Crafted((rebuild, args))))


def test_an_untouched_crafted_state_round_trips():
    """The control of the cases above: the same path with no edit restores everything."""
    net = trained()
    rebuild, args = crafted_args(net, lambda args: None)
    for restored in (rebuild(*args), pickle.loads(pickle.dumps(Crafted((rebuild, args))))):
        np.testing.assert_array_equal(restored.params, net.params)
        assert pickle.dumps(restored.__reduce__()[1][4][1:]) == pickle.dumps(net.__reduce__()[1][4][1:])
        assert restored.__reduce__()[1][5] == net.__reduce__()[1][5]


def test_a_bad_state_leaves_the_network_it_was_copied_from_alone():
    net = trained()
    before = pickle.dumps(net)
    rebuild, args = crafted_args(net, set_params(with_nan))
    with pytest.raises(ValueError, match=r"^params"):
        rebuild(*args)
    assert pickle.dumps(net) == before


ZERO_RNG_SCRIPT = """
import pickle

import numpy as np
import fastmlp as fm
net = fm.Network([2, 3, 1], seed=0)
rebuild, args = net.__reduce__()
args = list(args)
args[5] = ((0, 0, 0, 0), False, 0.0)
try:
    restored = rebuild(*args)
except ValueError as error:
    print("refused:", error)
    raise SystemExit(0)
restored.fit(np.zeros((8, 2)), np.zeros(8), epochs=1, batch_size=2, shuffle=True)
print("fitted")
"""


def test_an_all_zero_generator_state_is_refused_instead_of_hanging_a_shuffled_fit():
    import subprocess
    import sys

    try:
        done = subprocess.run([sys.executable, "-c", ZERO_RNG_SCRIPT], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("a shuffled fit from an all-zero generator state hangs (the state was accepted)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("refused: rng_state words: all four are zero"), done.stdout


# ---- #9: big integers at every public entry ----------------------------------------------------------


BIG = 2**62
BAD_SIZES = [
    ([2**62, 4], r"^layer_sizes: \[4611686018427387904, 4\] makes 18446744073709551620 parameters"),
    ([4, 2**62], r"^layer_sizes: \[4, 4611686018427387904\] makes"),
    ([2**40, 2**10], r"^layer_sizes: .* more than any memory holds"),
    ([3, 2**31, 2**31, 1], r"^layer_sizes: .* more than any memory holds"),
    ([2**63, 4], r"^layer_sizes\[0\]: expected an integer >= 1 and <= 4611686018427387904, got 9223372036854775808"),
    ([4, np.uint64(2**64 - 1)], r"^layer_sizes\[1\]: expected an integer >= 1 and <= 4611686018427387904"),
]


@pytest.mark.parametrize("sizes,message", BAD_SIZES)
def test_layer_sizes_whose_parameter_count_overflows_are_refused(sizes, message):
    with pytest.raises(ValueError, match=message):
        fm.Network(sizes)
    with pytest.raises(ValueError, match=message):
        fm.NeuralNetwork(sizes)


def small_problem():
    rng = np.random.default_rng(0)
    return fm.Network([2, 3, 1], seed=0), rng.standard_normal((8, 2)), rng.standard_normal((8, 1))


@pytest.mark.parametrize("value", [2**62 + 1, 2**63, 2**64, 10**30, np.uint64(2**63)])
@pytest.mark.parametrize("argument", ["epochs", "batch_size"])
def test_fit_refuses_big_counts_by_name(argument, value):
    net, X, y = small_problem()
    before = net.params.copy()
    with pytest.raises(ValueError, match=rf"^{argument}: expected an integer >= 1 and <= {BIG}, got {int(value)}"):
        net.fit(X, y, **{argument: value})
    if argument == "batch_size":
        with pytest.raises(ValueError, match=rf"^batch_size: expected an integer >= 1 and <= {BIG}"):
            net.partial_fit(X, y, batch_size=value)
    np.testing.assert_array_equal(net.params, before)


def test_a_batch_size_over_the_sample_count_is_full_batch():
    net, X, y = small_problem()
    full = net.copy()
    net.fit(X, y, batch_size=BIG, epochs=3)
    full.fit(X, y, epochs=3)
    np.testing.assert_array_equal(net.params, full.params)


@pytest.mark.parametrize("value", [1025, 2**31, 2**32 + 1, 2**63, 2**64])
def test_set_num_threads_refuses_big_counts_by_name(value, restore_num_threads):
    with pytest.raises(ValueError, match=rf"^n: expected an integer >= 1 and <= 1024, got {value}"):
        fm.set_num_threads(value)
    assert fm.get_num_threads() == restore_num_threads


@pytest.mark.parametrize("seed,message", [(-1, r"^seed: expected an integer >= 0"),
                                          (2**64, r"^seed: expected an integer >= 0 and <= 18446744073709551615, got "
                                                  r"18446744073709551616"),
                                          (2**100, r"^seed: expected an integer >= 0 and <= 18446744073709551615")])
def test_network_seed_out_of_range_is_refused(seed, message):
    with pytest.raises(ValueError, match=message):
        fm.Network([2, 1], seed=seed)


def test_the_largest_seed_works():
    net = fm.Network([2, 1], seed=2**64 - 1)
    assert net.seed == 2**64 - 1
    assert pickle.loads(pickle.dumps(net)).seed == 2**64 - 1


@pytest.mark.parametrize("epochs", [2**62 + 1, 2**63, 2**64])
@pytest.mark.parametrize("verbose", [False, True])
def test_the_article_class_refuses_big_epoch_counts(epochs, verbose, capsys):
    np.random.seed(0)
    nn = fm.NeuralNetwork([1, 4, 1])
    X = np.linspace(-1, 1, 8).reshape(-1, 1)
    with pytest.raises(ValueError, match=rf"^epochs: expected an integer >= 1 and <= {BIG}, got {epochs}"):
        nn.train(X, X**2, epochs=epochs, verbose=verbose)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("layer", [2, 2**63, -(2**63)])
def test_layer_cache_refuses_layers_out_of_range(layer):
    net, X, _ = small_problem()
    net.forward(X)
    with pytest.raises(ValueError, match=rf"^layer: expected an integer >= 0 and <= 1, got {layer}"):
        net.layer_cache(layer)


def test_gradient_check_refuses_a_negative_seed():
    net, X, y = small_problem()
    with pytest.raises(ValueError, match=r"^seed: expected an integer >= 0, got -1"):
        fm.gradient_check(net, X, y, max_params=3, seed=-1)


# ---- #4 (the Python side): pickling or copying during a fit takes one consistent state --------------


def state_of(net):
    """(params, kind, steps, buffers, rng) of a network as its pickle holds them."""
    _, _, _, params, (_, kind, steps, buffers), rng, _, _ = net.__reduce__()[1]
    return params, kind, steps, buffers, rng


def test_pickle_and_copy_during_a_fit_in_another_thread_take_one_consistent_state():
    """Full-batch Adam without shuffling: after k updates the state is one
    deterministic thing, so every state taken during the fit must be exactly the
    state of a network trained k updates from the same start (weights read while an
    update is under way, or paired with another moment's Adam moments, are not)."""
    import threading
    import time

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((256, 16)), rng.standard_normal((256, 1))
    net = fm.Network([16, 64, 64, 1], seed=0, dtype="float64")
    reference = net.copy()
    fit = threading.Thread(target=net.fit, args=(X, y),
                           kwargs=dict(epochs=150, optimizer=fm.Adam(lr=1e-3), shuffle=False))
    taken = []
    fit.start()
    while fit.is_alive() and len(taken) < 60:
        taken.append(pickle.loads(pickle.dumps(net)) if len(taken) % 2 else net.copy())
        time.sleep(0.002)  # spreads the states over the fit (the checks hold for any timing)
    fit.join()
    taken.append(net.copy())
    states = sorted((state_of(t) for t in taken), key=lambda s: s[2])
    done = 0
    for params, kind, steps, buffers, generator in states:
        if steps > done:
            reference.fit(X, y, epochs=steps - done, optimizer=fm.Adam(lr=1e-3), shuffle=False)
            done = steps
        expected = state_of(reference)
        np.testing.assert_array_equal(params, expected[0], err_msg=f"params after {steps} updates")
        if steps:
            assert kind == "adam" and len(buffers) == 2
            for b, e in zip(buffers, expected[3]):
                np.testing.assert_array_equal(b, e, err_msg=f"Adam's moments after {steps} updates")
        assert generator == expected[4]
    assert states[-1][2] == 150


def test_a_predict_from_another_thread_during_a_fit_sees_the_weights_after_some_update():
    """As Network's docstring says: never a half-updated set of weights."""
    import threading
    import time

    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((256, 16)), rng.standard_normal((256, 1))
    probe = rng.standard_normal((4, 16))
    net = fm.Network([16, 64, 64, 1], seed=0, dtype="float64")
    reference = net.copy()
    outputs = {reference.predict(probe).tobytes()}  # after each of the fit's updates, and before the first
    for _ in range(100):
        reference.fit(X, y, epochs=1, optimizer=fm.Adam(lr=1e-3), shuffle=False)
        outputs.add(reference.predict(probe).tobytes())
    fit = threading.Thread(target=net.fit, args=(X, y),
                           kwargs=dict(epochs=100, optimizer=fm.Adam(lr=1e-3), shuffle=False))
    seen = []
    fit.start()
    while fit.is_alive() and len(seen) < 60:
        seen.append(net.predict(probe).tobytes())
        time.sleep(0.002)
    fit.join()
    assert all(out in outputs for out in seen)
    assert net.predict(probe).tobytes() == reference.predict(probe).tobytes()
