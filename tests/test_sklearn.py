"""fastmlp.sklearn (issue 12, item 2): MLPRegressor and MLPClassifier pass scikit-learn's own
estimator checks (the expected failures named with their reasons) and work in Pipeline,
GridSearchCV and cross_val_score; labels of any kind, float32, partial_fit, warm_start,
early_stopping, sample and class weights, pickling."""

from __future__ import annotations

import importlib
import pickle
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")

from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import fastmlp as fm
from fastmlp.sklearn import MLPClassifier, MLPRegressor, expected_failed_checks


def blobs(n=120, n_classes=3, n_features=4, seed=0, dtype=np.float64):
    """Separable Gaussian blobs: X (n, n_features), integer labels 0..n_classes-1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    centers = 3 * rng.standard_normal((n_classes, n_features))
    X = centers[y] + rng.standard_normal((n, n_features))
    return X.astype(dtype), y


def regression(n=100, n_features=3, n_outputs=1, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features))
    W = rng.standard_normal((n_features, n_outputs))
    y = np.tanh(X @ W) + 0.05 * rng.standard_normal((n, n_outputs))
    return X.astype(dtype), (y[:, 0] if n_outputs == 1 else y)


# ---- scikit-learn's own checks -------------------------------------------------------------
# The defaults themselves pass every check (in about a second each: the checks' data sets are
# small); mini-batches, early stopping, batch norm and dropout each break the equivalence of
# sample weights and repeated rows, named by expected_failed_checks (max_iter=50 keeps those fast).
# class_weight="balanced" keeps the equivalence (weighted class counts) but fails the checks that call partial_fit.
CHECKED = [MLPRegressor(), MLPClassifier(),
           MLPRegressor(max_iter=50, batch_size=8, early_stopping=True),
           MLPClassifier(max_iter=50, batch_size=8, early_stopping=True, norm="batch", dropout=0.1),
           MLPClassifier(class_weight="balanced")]


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(CHECKED, expected_failed_checks=expected_failed_checks, xfail_strict=True)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)


def test_expected_failures_none_by_default_each_setting_named_otherwise():
    assert expected_failed_checks(MLPClassifier()) == {} == expected_failed_checks(MLPRegressor())
    reasons = expected_failed_checks(CHECKED[3])
    assert list(reasons) == ["check_sample_weight_equivalence_on_dense_data"]
    for setting in ("batch_size=8", "early_stopping", "norm='batch'", "dropout"):
        assert setting in reasons["check_sample_weight_equivalence_on_dense_data"]
    balanced = expected_failed_checks(MLPClassifier(class_weight="balanced"))
    assert sorted(balanced) == ["check_estimators_partial_fit_n_features", "check_fit_score_takes_y",
                                "check_n_features_in_after_fitting"]
    assert all("partial_fit refuses" in reason for reason in balanced.values())


def test_without_scikit_learn_the_import_error_names_the_extra(monkeypatch):
    for name in [name for name in sys.modules if name == "sklearn" or name.startswith("sklearn.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "fastmlp.sklearn")
    with pytest.raises(ImportError, match=r'pip install "fastmlp\[sklearn\]"'):
        importlib.import_module("fastmlp.sklearn")


# ---- in scikit-learn's tools ------------------------------------------------------------------
def test_pipeline_and_grid_search_on_digits_reach_95_percent():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0, stratify=y)
    pipeline = make_pipeline(StandardScaler(),
                             MLPClassifier(hidden_layer_sizes=(64,), max_iter=60, tol=None, random_state=0))
    grid = {"mlpclassifier__alpha": [1e-4, 1e-2], "mlpclassifier__learning_rate_init": [1e-3, 1e-2]}
    search = GridSearchCV(pipeline, grid, cv=3, n_jobs=2).fit(X_train, y_train)
    accuracy = search.score(X_test, y_test)
    assert accuracy >= 0.95, f"test accuracy {accuracy:.4f} with {search.best_params_}"
    assert search.best_estimator_[-1].network_.dtype == np.float64


def test_cross_val_score_of_the_regressor():
    X, y = regression(n=150)
    scores = cross_val_score(MLPRegressor((32,), learning_rate_init=0.01, max_iter=100, tol=None, random_state=0),
                             X, y, cv=3)
    assert scores.shape == (3,) and scores.min() > 0.8, scores


# ---- labels, dtypes, shapes ----------------------------------------------------------------------
def test_string_labels_come_back_as_labels():
    X, y = blobs()
    names = np.array(["setosa", "versicolor", "virginica"])[y]
    clf = MLPClassifier((16,), learning_rate_init=0.01, max_iter=100, tol=None, random_state=0).fit(X, names)
    np.testing.assert_array_equal(clf.classes_, ["setosa", "versicolor", "virginica"])
    assert clf.network_.n_outputs == 3
    assert clf.score(X, names) > 0.95
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 3)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[np.argmax(proba, axis=1)])
    np.testing.assert_allclose(clf.predict_log_proba(X), np.log(proba))


def test_binary_labels_give_two_probability_columns():
    X, y = blobs(n_classes=2)
    labels = np.where(y == 1, "yes", "no")
    clf = MLPClassifier((8,), max_iter=20, tol=None, random_state=0).fit(X, labels)
    np.testing.assert_array_equal(clf.classes_, ["no", "yes"])
    proba = clf.predict_proba(X)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-12)
    assert set(clf.predict(X)) <= {"no", "yes"}


def test_a_single_class_is_refused_naming_it():
    X, _ = blobs()
    with pytest.raises(ValueError, match="at least 2 classes"):
        MLPClassifier(max_iter=2).fit(X, np.zeros(len(X)))


@pytest.mark.parametrize("estimator", [MLPRegressor, MLPClassifier])
def test_float32_stays_float32_and_other_input_becomes_float64(estimator):
    X, y = blobs(dtype=np.float32)
    model = estimator((8,), max_iter=5, tol=None, random_state=0).fit(X, y)
    assert model.network_.dtype == np.float32
    out = model.predict_proba(X) if estimator is MLPClassifier else model.predict(X)
    assert out.dtype == np.float32
    for dtype in (np.float64, np.int64):
        model = estimator((8,), max_iter=5, tol=None, random_state=0).fit(X.astype(dtype), y)
        assert model.network_.dtype == np.float64
        # predict converts to the network's dtype whatever it gets
        out = model.predict_proba(X) if estimator is MLPClassifier else model.predict(X)
        assert out.dtype == np.float64


def test_regressor_with_several_targets_and_huber_loss():
    X, Y = regression(n_outputs=2)
    model = MLPRegressor((32,), learning_rate_init=0.01, max_iter=200, tol=None, random_state=0).fit(X, Y)
    assert model.n_outputs_ == 2 and model.predict(X).shape == (len(X), 2)
    assert model.score(X, Y) > 0.9
    huber = MLPRegressor((16,), loss="huber", huber_delta=0.5, max_iter=5, tol=None, random_state=0).fit(X, Y)
    assert huber.network_.loss == "huber" and huber.network_.huber_delta == 0.5
    assert MLPRegressor((8,), max_iter=2, tol=None).fit(X, Y[:, :1]).predict(X).shape == (len(X),)


def test_fastmlp_options_reach_the_network():
    X, y = blobs(n=100)
    clf = MLPClassifier((16, 16), activation="tanh", residual=True, norm="batch", dropout=0.1, solver="sgd",
                        momentum=0.5, max_iter=3, tol=None, random_state=0).fit(X, y)
    types = [layer["type"] for layer in clf.network_.architecture]
    assert "residual" in types and "batch_norm" in types and "dropout" in types
    assert clf.network_.activations[:2] == ("tanh", "tanh")
    assert isinstance(clf.network_.optimizer, fm.SGD) and clf.network_.optimizer.nesterov
    assert MLPClassifier((4,), activation="logistic", max_iter=1, tol=None).fit(X, y).network_.activations[0] == "sigmoid"


def test_batch_norm_with_auto_batches_avoids_a_last_batch_of_one():
    X, y = blobs(n=201)
    clf = MLPClassifier((8,), norm="batch", max_iter=2, tol=None, random_state=0).fit(X, y)
    assert clf.n_iter_ == 2


# ---- training: stopping, partial_fit, warm_start ---------------------------------------------------
def test_same_random_state_same_network_and_tol_none_runs_max_iter():
    X, y = blobs()
    a = MLPClassifier((8,), max_iter=7, tol=None, random_state=3).fit(X, y)
    b = MLPClassifier((8,), max_iter=7, tol=None, random_state=3).fit(X, y)
    np.testing.assert_array_equal(a.network_.params, b.network_.params)
    assert a.n_iter_ == 7 and len(a.loss_curve_) == 7


def test_max_iter_reached_while_improving_warns_convergence():
    X, y = blobs()
    with pytest.warns(ConvergenceWarning, match="max_iter=3"):
        MLPClassifier((8,), max_iter=3, random_state=0).fit(X, y)


def test_a_plateau_of_the_training_loss_stops_the_fit():
    X, y = blobs()
    clf = MLPClassifier((16,), learning_rate_init=0.05, max_iter=2000, tol=1e-3, n_iter_no_change=3,
                        random_state=0).fit(X, y)
    assert clf.n_iter_ < 2000


def test_early_stopping_holds_out_a_validation_set_and_keeps_the_best_weights():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 10))
    y = (X[:, 0] + 2 * rng.standard_normal(200) > 0).astype(int)  # noisy: the validation loss turns up
    clf = MLPClassifier((64,), learning_rate_init=0.02, max_iter=500, early_stopping=True,
                        validation_fraction=0.2, n_iter_no_change=5, random_state=0).fit(X, y)
    assert clf.n_iter_ < 500
    assert len(clf.validation_loss_curve_) == clf.n_iter_ == len(clf.loss_curve_)
    assert clf.best_validation_loss_ in clf.validation_loss_curve_
    assert clf.best_validation_loss_ <= clf.validation_loss_curve_[-1]


def test_partial_fit_needs_classes_first_then_continues():
    X, y = blobs()
    labels = np.array(["a", "b", "c"])[y]
    clf = MLPClassifier((16,), learning_rate_init=0.01, random_state=0)
    with pytest.raises(ValueError, match="classes"):
        clf.partial_fit(X, labels)
    clf.partial_fit(X[:60], labels[:60], classes=["c", "b", "a"])
    np.testing.assert_array_equal(clf.classes_, ["a", "b", "c"])
    for _ in range(30):
        clf.partial_fit(X, labels)
    assert clf.n_iter_ == 31 and len(clf.loss_curve_) == 31
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]
    assert clf.score(X, labels) > 0.9
    with pytest.raises(ValueError, match="'d' is not among the classes"):
        clf.partial_fit(X[:2], ["a", "d"])
    with pytest.raises(ValueError, match="differs from the classes"):
        clf.partial_fit(X, labels, classes=["a", "b"])


def test_regressor_partial_fit_builds_then_continues():
    X, y = regression()
    model = MLPRegressor((16,), learning_rate_init=0.01, random_state=0)
    for _ in range(50):
        model.partial_fit(X, y)
    assert model.n_iter_ == 50 and model.score(X, y) > 0.5


def test_warm_start_continues_exactly_where_the_last_fit_ended():
    X, y = blobs()
    one = MLPClassifier((8,), max_iter=5, tol=None, random_state=0).fit(X, y)
    warm = MLPClassifier((8,), max_iter=3, tol=None, random_state=0, warm_start=True).fit(X, y)
    network = warm.network_
    before = network.params.copy()
    warm.set_params(max_iter=2).fit(X, y)
    assert warm.n_iter_ == 5
    np.testing.assert_array_equal(warm.network_.params, one.network_.params)
    assert warm.network_ is not network  # a copy trained: the previous network_ is left as it was
    np.testing.assert_array_equal(network.params, before)
    assert warm.loss_curve_ == one.loss_curve_
    cold = MLPClassifier((8,), max_iter=3, tol=None, random_state=0).fit(X, y)
    first = cold.network_
    cold.fit(X, y)
    assert cold.network_ is not first and cold.n_iter_ == 3


@pytest.mark.parametrize("estimator, param, value", [
    (MLPClassifier, "hidden_layer_sizes", (4,)), (MLPClassifier, "activation", "tanh"),
    (MLPClassifier, "residual", True), (MLPClassifier, "norm", "layer"), (MLPClassifier, "dropout", 0.5),
    (MLPClassifier, "init", "he_normal"), (MLPRegressor, "loss", "huber"), (MLPRegressor, "activation", "identity")])
def test_warm_start_and_partial_fit_refuse_a_changed_architecture(estimator, param, value):
    X, y = blobs(n=60)
    model = estimator((8,), max_iter=2, tol=None, random_state=0, warm_start=True).fit(X, y)
    network, built = model.network_, model.get_params()[param]
    model.set_params(**{param: value})
    for refit in (lambda: model.fit(X, y), lambda: model.partial_fit(X, y)):
        with pytest.raises(ValueError, match=rf"(warm_start|partial_fit): {param} \(.*\) changed since the network"):
            refit()
        assert model.network_ is network and model.n_iter_ == 2
    model.set_params(**{param: built}).fit(X, y)  # set back: it continues
    assert model.n_iter_ == 4
    model.set_params(**{param: value}, warm_start=False).fit(X, y)  # a cold fit builds the new network
    assert model.n_iter_ == 2 and model.get_params()[param] == value


def test_warm_start_takes_the_same_architecture_spelled_otherwise_and_a_new_solver():
    X, y = regression(n=60)
    model = MLPRegressor((8,), max_iter=2, tol=None, random_state=0, warm_start=True, huber_delta=3.0).fit(X, y)
    model.set_params(hidden_layer_sizes=8, activation=["relu"], huber_delta=2.0).fit(X, y)  # delta: unused by mse
    model.set_params(solver="sgd", learning_rate_init=0.01).fit(X, y)
    assert model.n_iter_ == 6 and isinstance(model.network_.optimizer, fm.SGD)
    with pytest.raises(ValueError, match=r"loss \('squared_error' → 'huber'\), huber_delta \(None → 2.0\)"):
        model.set_params(loss="huber").fit(X, y)


def _fitted_state(model) -> dict:
    """Every fitted attribute of ``model``, the network's parameters copied."""
    state = {name: value for name, value in vars(model).items() if name.endswith("_")}
    state["params"] = model.network_.params.copy()
    return state


def _assert_same_state(model, state: dict) -> None:
    now = _fitted_state(model)
    assert sorted(now) == sorted(state)
    for name, value in state.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(now[name], value, err_msg=name)
        else:
            assert now[name] is value or now[name] == value, name


X40 = np.random.default_rng(0).standard_normal((40, 4))
LETTERS = np.array(list("dcba") * 10)
DIVERGING = X40.copy()
DIVERGING[30:] *= 1e300  # the last batch of 10 (no shuffle) overflows, after three updates


@pytest.mark.parametrize("warm_start", [False, True])
@pytest.mark.parametrize("refit, error", [
    pytest.param(lambda c: c.fit(X40, LETTERS, sample_weight=-np.ones(40)), ValueError, id="bad weights, new labels"),
    pytest.param(lambda c: c.fit(np.c_[X40, X40], LETTERS, sample_weight=-np.ones(40)), ValueError,
                 id="bad weights, 8 features"),
    pytest.param(lambda c: c.fit(X40 * 1e300, LETTERS), (FloatingPointError, ValueError), id="diverging, new labels"),
    pytest.param(lambda c: c.set_params(batch_size=10, shuffle=False).fit(DIVERGING, np.arange(40) % 4),
                 FloatingPointError, id="diverging after 3 updates"),
    pytest.param(lambda c: c.set_params(batch_size=10, shuffle=False).partial_fit(DIVERGING, np.arange(40) % 4),
                 FloatingPointError, id="partial_fit diverging after 3 updates")])
def test_a_failed_refit_leaves_every_fitted_attribute_as_it_was(refit, error, warm_start):
    clf = MLPClassifier((8,), max_iter=2, tol=None, random_state=0, warm_start=warm_start).fit(X40, np.arange(40) % 4)
    predicted, state = clf.predict(X40), _fitted_state(clf)
    with pytest.raises(error):  # warm_start and new labels: "not among the classes", a ValueError
        refit(clf)
    _assert_same_state(clf, state)
    np.testing.assert_array_equal(clf.predict(X40), predicted)


def test_warnings_turned_into_errors_do_not_undo_a_completed_fit():
    X, y = blobs()
    clf = MLPClassifier((8,), max_iter=2, random_state=0)
    with pytest.raises(ConvergenceWarning):  # pytest's filterwarnings = error makes the warning raise
        clf.fit(X, y)
    assert clf.n_iter_ == 2 and clf.predict(X).shape == (len(X),)


def test_warm_start_refuses_a_label_the_network_has_no_output_for():
    X, y = blobs(n_classes=2)
    clf = MLPClassifier((4,), max_iter=1, tol=None, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="not among the classes"):
        clf.fit(X, np.where(y == 1, 2, 0))


# ---- weights ------------------------------------------------------------------------------------------
def test_sample_weight_ones_and_scaled_change_nothing():
    X, y = blobs()
    plain = MLPClassifier((8,), max_iter=5, tol=None, random_state=0).fit(X, y)
    ones = MLPClassifier((8,), max_iter=5, tol=None, random_state=0).fit(X, y, sample_weight=np.ones(len(X)))
    np.testing.assert_array_equal(ones.network_.params, plain.network_.params)
    weight = np.random.default_rng(1).uniform(0.5, 2, len(X))
    once = MLPClassifier((8,), max_iter=5, tol=None, random_state=0).fit(X, y, sample_weight=weight)
    scaled = MLPClassifier((8,), max_iter=5, tol=None, random_state=0).fit(X, y, sample_weight=4 * weight)
    np.testing.assert_allclose(scaled.network_.params, once.network_.params, rtol=1e-12, atol=1e-14)
    assert not np.array_equal(once.network_.params, plain.network_.params)


def test_zero_weight_samples_are_ignored_in_full_batch_training():
    X, y = regression(n=80)
    y_outliers = y.copy()
    y_outliers[:20] += 50  # outliers that a zero weight must silence
    weight = np.r_[np.zeros(20), np.ones(60)]
    options = dict(hidden_layer_sizes=(8,), batch_size=1000, max_iter=20, tol=None, random_state=0)
    weighted = MLPRegressor(**options).fit(X, y_outliers, sample_weight=weight)
    clean = MLPRegressor(**options).fit(X[20:], y[20:])
    np.testing.assert_allclose(weighted.network_.params, clean.network_.params, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("bad, error", [(np.zeros(120), ValueError), (-np.ones(120), ValueError),
                                        (np.ones(7), ValueError)])
def test_bad_sample_weights_are_refused(bad, error):
    X, y = blobs()
    with pytest.raises(error, match="sample_weight"):
        MLPClassifier((4,), max_iter=1, tol=None).fit(X, y, sample_weight=bad)


def test_class_weight_dict_by_label_equals_the_sample_weights_it_makes():
    X, y = blobs()
    labels = np.array(["a", "b", "c"])[y]
    by_class = MLPClassifier((8,), max_iter=5, tol=None, random_state=0,
                             class_weight={"a": 3.0, "c": 0.5}).fit(X, labels)
    weight = np.select([labels == "a", labels == "c"], [3.0, 0.5], 1.0)
    by_sample = MLPClassifier((8,), max_iter=5, tol=None, random_state=0).fit(X, labels, sample_weight=weight)
    np.testing.assert_array_equal(by_class.network_.params, by_sample.network_.params)
    partial = MLPClassifier((8,), random_state=0, class_weight={"a": 3.0, "c": 0.5})
    partial.partial_fit(X, labels, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="not among the classes"):
        MLPClassifier(max_iter=1, class_weight={"z": 2.0}).fit(X, labels)
    with pytest.raises(ValueError, match="balanced"):
        MLPClassifier(class_weight="balanced").partial_fit(X, labels, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match=r"^class_weight: every training sample's class weighs 0"):
        MLPClassifier(max_iter=1, class_weight={"a": 0, "b": 0, "c": 0}).fit(X, labels)
    with pytest.raises(ValueError, match=r"^sample_weight and class_weight: every training sample"):
        MLPClassifier(max_iter=1, class_weight={"a": 0, "b": 0}).fit(X, labels, sample_weight=(labels != "c") * 1.0)


def test_balanced_class_weight_lifts_the_rare_class():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((400, 2))
    y = (X[:, 0] + 0.8 * rng.standard_normal(400) > 1.6).astype(int)  # about 8 % positive, overlapping
    options = dict(hidden_layer_sizes=(16,), learning_rate_init=0.01, max_iter=100, tol=None, random_state=0)
    plain = MLPClassifier(**options).fit(X, y)
    balanced = MLPClassifier(class_weight="balanced", **options).fit(X, y)
    recall = lambda clf: np.mean(clf.predict(X[y == 1]) == 1)  # noqa: E731
    assert recall(balanced) > recall(plain) + 0.2, (recall(plain), recall(balanced))


# ---- persistence, errors --------------------------------------------------------------------------------
@pytest.mark.parametrize("estimator", [MLPRegressor, MLPClassifier])
def test_pickle_round_trip_predicts_the_same(estimator):
    X, y = blobs(dtype=np.float32)
    model = estimator((8,), norm="layer", max_iter=5, tol=None, random_state=0).fit(X, y)
    again = pickle.loads(pickle.dumps(model))
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
    assert again.n_iter_ == model.n_iter_ and again.network_.dtype == np.float32
    assert clone(model).get_params() == model.get_params()
    assert not hasattr(clone(model), "network_")


def test_errors_name_the_parameter_and_unfitted_predict_says_so():
    X, y = blobs()
    with pytest.raises(NotFittedError):
        MLPClassifier().predict(X)
    for params, name in [({"solver": "lbfgs"}, "solver"), ({"learning_rate_init": -1.0}, "learning_rate_init"),
                         ({"hidden_layer_sizes": (8, 0)}, r"hidden_layer_sizes\[1\]"),
                         ({"activation": "softsign"}, "activation"), ({"batch_size": "big"}, "batch_size"),
                         ({"validation_fraction": 1.0, "early_stopping": True}, "validation_fraction"),
                         ({"alpha": -1.0}, "alpha"), ({"beta_1": 1.0}, "beta_1")]:
        with pytest.raises(ValueError, match=name):
            MLPClassifier(max_iter=1, **params).fit(X, y)
    with pytest.raises(ValueError, match="loss"):
        MLPRegressor(loss="poisson").fit(X, y)


def test_balanced_class_weight_is_scikit_learns():
    from sklearn.utils.class_weight import compute_class_weight, compute_sample_weight

    X, y = blobs(n=90)
    y = np.where(y == 2, 1, y)  # classes of 30 and 60 samples
    labels = np.array(["x", "y"])[y]
    balanced = MLPClassifier((8,), max_iter=5, tol=None, random_state=0, class_weight="balanced").fit(X, labels)
    weighted = MLPClassifier((8,), max_iter=5, tol=None, random_state=0).fit(
        X, labels, sample_weight=compute_sample_weight("balanced", labels))
    np.testing.assert_array_equal(balanced.network_.params, weighted.network_.params)
    # with sample weights the class counts are weighted, as compute_class_weight(..., sample_weight) counts them
    sample_weight = np.random.default_rng(0).integers(0, 4, len(labels)).astype(float)
    per_class = compute_class_weight("balanced", classes=np.array(["x", "y"]), y=labels, sample_weight=sample_weight)
    both = MLPClassifier((8,), max_iter=5, tol=None, random_state=0, class_weight="balanced").fit(
        X, labels, sample_weight=sample_weight)
    by_hand = MLPClassifier((8,), max_iter=5, tol=None, random_state=0).fit(
        X, labels, sample_weight=sample_weight * per_class[y])
    np.testing.assert_array_equal(both.network_.params, by_hand.network_.params)


def test_early_stopping_validates_on_samples_of_positive_weight_only():
    X, y = blobs(n=120)
    weight = np.r_[np.zeros(100), np.ones(20)]
    clf = MLPClassifier((8,), learning_rate_init=0.05, early_stopping=True, validation_fraction=0.5, random_state=0)
    clf.fit(X, y, sample_weight=weight)  # a split of all rows would likely validate on weight-0 rows only
    assert np.isfinite(clf.best_validation_loss_)
    train, validation = clf._validation_split(y, weight, np.random.RandomState(0))
    assert len(validation) == 10 and (weight[validation] > 0).all()
    np.testing.assert_array_equal(np.sort(np.r_[train, validation]), np.arange(120))


def test_feature_names_of_a_data_frame_are_kept_and_checked():
    pd = pytest.importorskip("pandas")
    X, y = blobs()
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    clf = MLPClassifier((4,), max_iter=2, tol=None).fit(frame, y)
    np.testing.assert_array_equal(clf.feature_names_in_, ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match="feature names"):
        clf.predict(frame[["d", "c", "b", "a"]])


def test_verbose_prints_a_line_per_epoch_and_silence_otherwise(capsys):
    X, y = blobs()
    MLPClassifier((4,), max_iter=3, tol=None).fit(X, y)
    assert capsys.readouterr().out == ""
    MLPClassifier((4,), max_iter=3, tol=None, verbose=True).fit(X, y)
    assert capsys.readouterr().out.count("Epoch") == 3


@pytest.mark.parametrize("class_weight, fit_kwargs", [
    ({0: 1e39}, {}),
    ({0: 1e30}, {"sample_weight": np.full(40, 1e10)}),
    ({0: 1e-50, 1: 1e-50}, {}),
])
def test_extreme_class_weights_on_float32_weigh_as_their_ratios(class_weight, fit_kwargs):
    """Class weights (times sample weights) beyond float32's range are brought into it
    by a power of two before the cast: no overflow, no weight lost to zero."""
    X = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    y = np.arange(40) % 2
    clf = MLPClassifier(hidden_layer_sizes=(4,), max_iter=3, tol=None, random_state=0,
                        class_weight=class_weight).fit(X, y, **fit_kwargs)
    assert np.isfinite(clf.network_.params).all()
    assert clf.n_iter_ == 3
