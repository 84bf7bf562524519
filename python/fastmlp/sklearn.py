"""scikit-learn estimators around :class:`fastmlp.Network`: ``MLPRegressor`` and ``MLPClassifier``.

They take fastmlp's options as constructor parameters, named as scikit-learn's
own ``sklearn.neural_network`` estimators name them where the meaning is the
same (hidden_layer_sizes, activation, solver, alpha, batch_size,
learning_rate_init, max_iter, tol, n_iter_no_change, early_stopping,
validation_fraction, ...), and fastmlp's names for what scikit-learn's MLP does
not have (residual, norm, dropout, init, clip_norm). They follow scikit-learn's
conventions (``get_params``/``set_params``, ``clone``, ``n_features_in_``,
``feature_names_in_``, input validation) and pass
``sklearn.utils.estimator_checks.check_estimator`` except for the checks that
:func:`expected_failed_checks` names with the reason (none with the
defaults), so they work inside
``Pipeline``, ``GridSearchCV`` and ``cross_val_score``.

The network's dtype follows X: float32 input trains a float32 network (and
predicts float32), anything else is converted to float64, as scikit-learn's
MLP does. A classifier's labels may be anything ``np.unique`` sorts (strings
too); the network sees their indices 0..k-1 and has k outputs with a softmax
(two for a binary problem), so ``predict_proba`` is (n_samples, k).

Importing this module needs scikit-learn >= 1.6 (``pip install "fastmlp[sklearn]"``);
the rest of fastmlp does not.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as error:  # no scikit-learn, or one older than 1.6 (no validate_data)
    raise ImportError(
        "fastmlp.sklearn needs scikit-learn >= 1.6: pip install \"fastmlp[sklearn]\" "
        f"({error})"
    ) from error

from ._validation import check_choice, check_int, check_positive_float, check_real, check_sample_weight
from .callbacks import EarlyStopping
from .network import Network, _relative
from .optimizers import LAMB, SGD, Adam, AdamW, Optimizer

__all__ = ["MLPRegressor", "MLPClassifier", "expected_failed_checks"]

SOLVERS = ("sgd", "adam", "adamw", "lamb")
REGRESSION_LOSSES = {"squared_error": "mse", "huber": "huber"}
_ACTIVATION_ALIASES = {"identity": "linear", "logistic": "sigmoid"}  # scikit-learn's names for two of ours
AUTO_BATCH = 200  # batch_size="auto": min(200, n_samples), as scikit-learn's MLP
_SEED_BOUND = np.iinfo(np.int32).max  # the seeds drawn from random_state lie below it

_WEIGHTS_VERSUS_REPEATS = "check_sample_weight_equivalence_on_dense_data"
_CHECKS_CALLING_PARTIAL_FIT = ("check_fit_score_takes_y", "check_n_features_in_after_fitting",
                               "check_estimators_partial_fit_n_features")


def expected_failed_checks(estimator) -> dict[str, str]:
    """The scikit-learn checks ``estimator`` (an MLPRegressor or MLPClassifier) is
    expected to fail, each with its reason: ``check_estimator(estimator,
    expected_failed_checks=expected_failed_checks(estimator))``, or the same
    function as ``parametrize_with_checks``'s ``expected_failed_checks``.

    With the defaults there are none. check_sample_weight_equivalence fits 15
    rows with integer weights and, beside it, the rows repeated that many times;
    with batch_size="auto" both are one full batch, and since each batch's loss
    is the weighted mean Σ wᵢ·lᵢ / Σ wᵢ the two fits agree. Settings that see
    rows rather than weights break that equivalence, and each is named here.
    ``class_weight="balanced"`` keeps it (the class counts are weighted, as
    scikit-learn's compute_class_weight counts them), but partial_fit refuses
    "balanced", which fails the three checks that call partial_fit.
    """
    params = estimator.get_params()
    failed = {}
    if isinstance(params.get("class_weight"), str) and params["class_weight"] == "balanced":
        reason = ("class_weight='balanced': partial_fit refuses it, since the balanced weights need the class counts "
                  "of the whole training set and partial_fit sees a part of it (scikit-learn's SGDClassifier refuses "
                  "it likewise); this check calls partial_fit")
        failed.update(dict.fromkeys(_CHECKS_CALLING_PARTIAL_FIT, reason))
    reasons = []
    if not (isinstance(params["batch_size"], str) and params["batch_size"] == "auto"):
        reasons.append(f"batch_size={params['batch_size']!r}: in mini-batches a row of weight 2 is one row of one "
                       f"batch, while its two repeats may fall in two batches after the shuffle, so the updates "
                       f"differ (scikit-learn lists its SGD estimators for the same reason)")
    if params["early_stopping"]:
        reasons.append("early_stopping: the validation split draws rows, so the repeated rows and the weighted "
                       "ones are split differently")
    if params["norm"] == "batch":
        reasons.append("norm='batch': batch norm's statistics are plain means over the batch's rows, so a "
                       "repeated row counts twice in them and a weighted row once")
    if params["dropout"]:
        reasons.append("dropout: each row draws its own mask, so two repeats of a row get two masks and a "
                       "weighted row one")
    if reasons:
        failed[_WEIGHTS_VERSUS_REPEATS] = "; ".join(reasons)
    return failed


class _BaseMLP(BaseEstimator):
    """What the regressor and the classifier share: the parameters, building the
    network and its optimizer, and the epochs of fit and partial_fit."""

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        residual=False,
        norm=None,
        dropout=0.0,
        init="xavier_uniform",
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        clip_norm=None,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.residual = residual
        self.norm = norm
        self.dropout = dropout
        self.init = init
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.clip_norm = clip_norm

    # ---- what the subclasses say ------------------------------------------------------
    def _network_loss(self) -> tuple[str, float]:
        """(fastmlp loss, huber_delta) of the network."""
        raise NotImplementedError

    def _prepare_targets(self, y, first: bool, incremental: bool, classes=None) -> np.ndarray:
        """y as the network reads it; on the first fit, records what predict needs (classes_, ...)."""
        raise NotImplementedError

    def _class_weight(self, y_network: np.ndarray, sample_weight: np.ndarray | None,
                      incremental: bool) -> np.ndarray | None:
        """Each sample's class weight (None: none; always for a regressor)."""
        return None

    def _stratify(self, y_network, n_validation: int):
        """What the early-stopping split keeps the proportions of (None: nothing)."""
        return None

    # ---- the parameters, checked when fit reads them (scikit-learn's rule: __init__ only stores) ----
    def _hidden_sizes(self) -> list[int]:
        sizes = self.hidden_layer_sizes
        if isinstance(sizes, numbers.Integral) and not isinstance(sizes, (bool, np.bool_)):
            sizes = [sizes]
        if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__iter__"):
            raise TypeError(f"hidden_layer_sizes: expected an integer or a sequence of integers such as (64, 32), "
                            f"got {sizes!r}")
        return [check_int(size, f"hidden_layer_sizes[{i}]", minimum=1) for i, size in enumerate(sizes)]

    def _activation(self):
        activation = self.activation
        if isinstance(activation, str):
            return _ACTIVATION_ALIASES.get(activation, activation)
        if hasattr(activation, "__len__"):
            return [_ACTIVATION_ALIASES.get(name, name) if isinstance(name, str) else name for name in activation]
        raise TypeError(f"activation: expected a name such as 'relu' or one per hidden layer, got {activation!r}")

    def _optimizer(self) -> Optimizer:
        """The optimizer the parameters describe; a fresh one of the same kind continues the
        network's optimizer state (so warm_start and partial_fit go on where they were)."""
        solver = check_choice(self.solver, "solver", SOLVERS)
        lr = check_positive_float(self.learning_rate_init, "learning_rate_init")
        alpha = check_real(self.alpha, "alpha", 0.0, float("inf"), high_open=True)
        clip_norm = None if self.clip_norm is None else check_positive_float(self.clip_norm, "clip_norm")
        if solver == "sgd":
            momentum = check_real(self.momentum, "momentum", 0.0, 1.0)
            if not isinstance(self.nesterovs_momentum, (bool, np.bool_)):
                raise TypeError(f"nesterovs_momentum: expected True or False, got {self.nesterovs_momentum!r}")
            return SGD(lr, momentum, nesterov=bool(self.nesterovs_momentum) and momentum > 0, weight_decay=alpha,
                       clip_norm=clip_norm)
        betas = (check_real(self.beta_1, "beta_1", 0.0, 1.0, high_open=True),
                 check_real(self.beta_2, "beta_2", 0.0, 1.0, high_open=True))
        eps = check_positive_float(self.epsilon, "epsilon")
        rule = {"adam": Adam, "adamw": AdamW, "lamb": LAMB}[solver]
        return rule(lr, betas, eps, alpha, clip_norm=clip_norm)

    def _batch_size(self, n_samples: int) -> int:
        """The batch size for ``n_samples`` training samples: "auto" is min(200, n_samples).
        With batch norm, a size that would leave a last batch of one sample (whose
        statistics do not exist) is lowered until it does not, so that any fold of a
        cross-validation trains."""
        if isinstance(self.batch_size, str):
            if self.batch_size != "auto":
                raise ValueError(f"batch_size: expected 'auto' or a positive integer, got {self.batch_size!r}")
            size = min(AUTO_BATCH, n_samples)
        else:
            size = min(check_int(self.batch_size, "batch_size", minimum=1), n_samples)
        if self.norm == "batch":
            while size > 2 and n_samples % size == 1:
                size -= 1
        return size

    def _verbose(self) -> int:
        if not isinstance(self.verbose, (bool, np.bool_, numbers.Integral)):
            raise TypeError(f"verbose: expected True/False or 0, 1, 2, got {self.verbose!r}")
        return min(int(self.verbose), 2)

    def _check_flag(self, name: str) -> bool:
        value = getattr(self, name)
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}: expected True or False, got {value!r}")
        return bool(value)

    # ---- building and training --------------------------------------------------------
    def _new_network(self, n_features: int, n_outputs: int, dtype, seed: int) -> Network:
        loss, huber_delta = self._network_loss()
        return Network([n_features, *self._hidden_sizes(), n_outputs], self._activation(),
                       residual=self._check_flag("residual"), norm=self.norm, dropout=self.dropout,
                       loss=loss, huber_delta=huber_delta, init=self.init, dtype=np.dtype(dtype).name, seed=seed)

    def _fit(self, X, y, sample_weight=None, *, incremental: bool = False, classes=None):
        """fit (incremental False) or partial_fit (True), all or nothing: a fit that
        raises (bad input, a diverging loss, KeyboardInterrupt) leaves every fitted
        attribute as it was, so that predict keeps answering with the previous
        network and the classes_ and n_features_in_ that go with it."""
        params = set(self._get_param_names())
        fitted = {name: value for name, value in vars(self).items() if name not in params}
        try:
            unconverged = self._train(X, y, sample_weight, incremental, classes)
        except BaseException:  # what _train set (validate_data's n_features_in_ first) goes, what was comes back
            for name in [name for name in vars(self) if name not in params]:
                delattr(self, name)
            vars(self).update(fitted)
            raise
        if unconverged:  # after the fit is complete, so that warnings turned into errors do not undo it
            warnings.warn(unconverged, ConvergenceWarning, stacklevel=3)
        return self

    def _train(self, X, y, sample_weight, incremental: bool, classes) -> str | None:
        """The body of :meth:`_fit`: validate, build the network on a first pass (or
        continue a copy of the fitted one), train, record n_iter_ and loss_curve_.
        Returns the ConvergenceWarning's message when max_iter ran out while the loss
        was still improving, else None."""
        optimizer = self._optimizer()  # the parameters checked before anything changes
        verbose = self._verbose()
        shuffle = self._check_flag("shuffle")
        epochs = 1 if incremental else check_int(self.max_iter, "max_iter", minimum=1)
        first = not hasattr(self, "network_") or not (incremental or self._check_flag("warm_start"))
        if not first:
            self._check_architecture_unchanged("partial_fit" if incremental else "warm_start")
        dtype = [np.float64, np.float32] if first else self.network_.dtype
        X, y = validate_data(self, X, y, reset=first, dtype=dtype, **self._target_options())
        y_network = self._prepare_targets(y, first, incremental, classes)
        sample_weight = check_sample_weight(sample_weight, "sample_weight", X.shape[0], X.dtype)
        class_weight = self._class_weight(y_network, sample_weight, incremental)
        if class_weight is not None:
            # In float64, brought to a largest weight of [1, 2) by a power of two (exact;
            # weights only count relative to each other), then checked in X's dtype, so
            # that neither huge nor tiny class weights overflow or vanish in float32.
            product = class_weight.astype(np.float64)
            if sample_weight is not None:
                product = product * sample_weight
            if not product.any():
                raise ValueError(f"class_weight: every training sample's class weighs 0 ({self.class_weight!r}); "
                                 f"nothing would be learned" if sample_weight is None else
                                 "sample_weight and class_weight: every training sample has a zero weight or a "
                                 "class of zero weight; nothing would be learned")
            product = _relative(product)
            sample_weight = check_sample_weight(product, "class_weight" if sample_weight is None else
                                                "sample_weight × class_weight", X.shape[0], X.dtype)
        random = check_random_state(self.random_state)
        seed = int(random.randint(_SEED_BOUND))
        if first:
            network = self._new_network(X.shape[1], self.n_outputs_, X.dtype, seed)
        else:  # a copy, so that a fit that fails midway leaves network_ untouched
            network = self.network_.copy()
        options = {}
        early_stopping = not incremental and self._check_flag("early_stopping")
        if early_stopping:
            train, validation = self._validation_split(y_network, sample_weight, random)
            if sample_weight is not None:
                options["validation_data"] = (X[validation], y_network[validation], sample_weight[validation])
                sample_weight = sample_weight[train]
            else:
                options["validation_data"] = (X[validation], y_network[validation])
            X, y_network = X[train], y_network[train]
        stops = not incremental and self.tol is not None
        if stops:
            tol = check_real(self.tol, "tol", 0.0, float("inf"), high_open=True)
            patience = check_int(self.n_iter_no_change, "n_iter_no_change", minimum=1)
            options["early_stopping"] = EarlyStopping("val_loss" if early_stopping else "loss", patience=patience,
                                                      min_delta=tol, restore_best_weights=early_stopping)
        history = network.fit(X, y_network, epochs=epochs, batch_size=self._batch_size(X.shape[0]),
                              optimizer=optimizer, shuffle=shuffle, verbose=verbose, sample_weight=sample_weight,
                              **options)
        if first:
            self._built_from_ = self._architecture_params()
            self.n_iter_ = 0
            self.loss_curve_ = []
            self.validation_loss_curve_ = None
            self.__dict__.pop("best_validation_loss_", None)
        self.network_ = network
        self._record(history)
        if stops and history.stopped_epoch is None:
            return (f"{type(self).__name__}: max_iter={epochs} epochs ran and the "
                    f"{'validation' if early_stopping else 'training'} loss was still improving by more than "
                    f"tol={self.tol} within n_iter_no_change={self.n_iter_no_change} epochs; the fit has "
                    f"not converged (raise max_iter, or set tol=None to run max_iter epochs without this check)")
        return None

    def _architecture_params(self) -> dict:
        """The parameters the network is built from, each as the network reads it
        ((64,) and 64 alike, one name and that name per layer alike): what a warm
        start or partial_fit cannot change."""
        sizes, activation, init = self._hidden_sizes(), self._activation(), self.init
        if isinstance(init, str):
            init = [init] * (len(sizes) + 1)
        elif isinstance(init, tuple):
            init = list(init)
        return {"hidden_layer_sizes": sizes,
                "activation": [activation] * len(sizes) if isinstance(activation, str) else activation,
                "residual": self._check_flag("residual"), "norm": self.norm, "dropout": self.dropout,
                "init": init}

    def _check_architecture_unchanged(self, caller: str) -> None:
        """A ValueError naming every architecture parameter set differently since the
        fitted network was built: continuing that network would silently ignore them."""
        built, now = self._built_from_, self._architecture_params()
        changed = [name for name in now if not _same(built.get(name), now[name])]
        if changed:
            listed = ", ".join(f"{name} ({built.get(name)!r} → {now[name]!r})" for name in changed)
            raise ValueError(f"{caller}: {listed} changed since the network was built, and continuing it cannot "
                             f"apply that; set {'it' if len(changed) == 1 else 'them'} back, or fit with "
                             f"warm_start=False to build a new network")

    def _validation_split(self, y_network, sample_weight, random) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) row indices for early stopping: validation_fraction of the
        samples of positive weight, drawn at random (stratified for a classifier when every
        class can be on both sides). A sample of weight 0 stays on the training side,
        where it adds nothing to the loss or the gradient (it still has its place in the
        shuffled batches, in batch norm's statistics and in dropout's draws)."""
        fraction = check_real(self.validation_fraction, "validation_fraction", 0.0, 1.0, low_open=True,
                              high_open=True)
        rows = np.arange(len(y_network)) if sample_weight is None else np.flatnonzero(sample_weight > 0)
        n_validation = int(np.ceil(fraction * len(rows)))  # train_test_split's rounding
        if n_validation >= len(rows):
            raise ValueError(f"early_stopping: validation_fraction={self.validation_fraction} of {len(rows)} "
                             f"sample{'s' if len(rows) != 1 else ''} (of positive weight) leaves none to train on")
        _, validation = train_test_split(rows, test_size=n_validation, random_state=int(random.randint(_SEED_BOUND)),
                                         stratify=self._stratify(y_network[rows], n_validation))
        validation = np.sort(validation)
        return np.setdiff1d(np.arange(len(y_network)), validation, assume_unique=True), validation

    def _record(self, history) -> None:
        self.n_iter_ += len(history)
        self.loss_curve_ = self.loss_curve_ + list(history["loss"])
        if "val_loss" in history.history:
            self.validation_loss_curve_ = (self.validation_loss_curve_ or []) + list(history["val_loss"])
        if history.best_epoch is not None and "val_loss" in history.history:
            self.best_validation_loss_ = float(history["val_loss"][history.best_epoch])

    def _target_options(self) -> dict:
        return {}

    def _validated_X(self, X) -> np.ndarray:
        """X for predicting: checked as at fit (feature count and names), in the network's dtype."""
        check_is_fitted(self, "network_")
        return validate_data(self, X, reset=False, dtype=self.network_.dtype)



class MLPRegressor(RegressorMixin, _BaseMLP):
    """A fastmlp network as a scikit-learn regressor: mean squared error (or Huber)
    on one or several outputs.

    Parameters
    ----------
    hidden_layer_sizes : int or sequence of int, default=(100,)
        The hidden layers' widths; () for a linear model.
    activation : str or sequence of str, default="relu"
        The hidden layers' activation, one name or one per hidden layer: relu,
        leaky_relu, tanh, sigmoid, swish, gelu, linear (scikit-learn's "identity"
        and "logistic" are accepted for linear and sigmoid).
    residual : bool, default=False
        Identity shortcuts around every hidden block whose input and output widths
        agree (see :class:`fastmlp.Network`).
    norm : None, "layer" or "batch", default=None
        A layer norm or batch norm in every hidden block.
    dropout : float, default=0.0
        Dropout probability after every hidden activation, in training only.
    init : str or sequence of str, default="xavier_uniform"
        The initial weights' scheme, one or one per layer (see
        :class:`fastmlp.Network`). The default is scikit-learn's MLP's (Glorot
        uniform), which starts a shallow network's outputs small; "auto" is
        fastmlp's own (He-normal for the relu family), better for deep ones.
    solver : {"adam", "adamw", "lamb", "sgd"}, default="adam"
        The optimizer: :class:`fastmlp.Adam`, :class:`~fastmlp.AdamW`,
        :class:`~fastmlp.LAMB` or :class:`~fastmlp.SGD` (with ``momentum``,
        ``nesterovs_momentum``).
    alpha : float, default=0.0001
        L2 penalty, the optimizer's ``weight_decay``: g ← g + alpha·w for
        every parameter (AdamW: decoupled, w ← w − lr·alpha·w). Unlike
        scikit-learn's MLP it is not divided by the batch size and applies to
        the biases too.
    batch_size : int or "auto", default="auto"
        Samples per update; "auto" is min(200, n_samples). Larger than the
        training set means full batch. With ``norm="batch"`` a size that would
        leave a last batch of one sample is lowered until it does not.
    learning_rate_init : float, default=0.001
        The optimizer's learning rate (constant).
    max_iter : int, default=200
        The most epochs a fit runs (partial_fit runs one).
    shuffle : bool, default=True
        Shuffle the samples every epoch (with the network's seeded generator).
    random_state : int, RandomState or None, default=None
        Seeds the network (initial weights, shuffling, dropout) and the
        early-stopping split; an int gives the same fit every time.
    tol : float or None, default=1e-4
        A fit stops when the training loss (with ``early_stopping`` the
        validation loss) has not fallen by more than ``tol`` for
        ``n_iter_no_change`` epochs; running out of ``max_iter`` first warns
        with ConvergenceWarning. None runs exactly ``max_iter`` epochs (in one
        engine call, the fastest) and does not warn.
    verbose : bool or int, default=False
        1 (True) prints a line per epoch, 2 a progress bar.
    warm_start : bool, default=False
        fit continues from the fitted network and its optimizer state instead
        of starting afresh; n_iter_ and loss_curve_ accumulate. The
        parameters the network is built from (hidden_layer_sizes, activation,
        residual, norm, dropout, init, and the regressor's loss and
        huber_delta) cannot change in between: such a fit (and partial_fit)
        raises ValueError naming them. The optimizer's parameters may change
        (another solver starts its state afresh).
    momentum : float, default=0.9
        SGD's momentum.
    nesterovs_momentum : bool, default=True
        SGD's Nesterov momentum (with momentum > 0).
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the samples (at random, stratified
        for a classifier), stop when their loss stops improving (``tol``,
        ``n_iter_no_change``) and keep the weights of the best epoch.
    validation_fraction : float, default=0.1
        The held-out share with ``early_stopping``.
    beta_1, beta_2, epsilon : float, default=0.9, 0.999, 1e-8
        Adam's (AdamW's, LAMB's) moment decay rates and denominator term.
    n_iter_no_change : int, default=10
        Epochs without an improvement of ``tol`` tolerated before stopping.
    clip_norm : float or None, default=None
        Clip the gradient to this global L2 norm before each update.
    loss : {"squared_error", "huber"}, default="squared_error"
        The loss: mean squared error, or Huber with ``huber_delta``.
    huber_delta : float, default=1.0
        Where the Huber loss turns from quadratic to linear.

    Attributes
    ----------
    network_ : fastmlp.Network
        The fitted network (its dtype is X's: float32 or float64).
    n_features_in_, feature_names_in_ :
        As every scikit-learn estimator.
    n_outputs_ : int
        The number of targets.
    n_iter_ : int
        Epochs run by all fits so far (warm_start and partial_fit add theirs).
    loss_curve_ : list of float
        The training loss of every epoch: the mean loss of its samples,
        weighted by sample_weight (and class_weight), each sample's loss
        measured in its batch before that batch's update.
    validation_loss_curve_ : list of float or None
        With early_stopping: the validation loss of every epoch.
    best_validation_loss_ : float
        With early_stopping: the best validation loss, whose weights were kept.

    A fit or partial_fit that raises (bad input, a loss that turns
    non-finite, KeyboardInterrupt) leaves every fitted attribute as it was:
    a warm start or partial_fit trains a copy of ``network_``, which replaces
    it only when the fit completes, so a new ``network_`` object each time.
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        residual=False,
        norm=None,
        dropout=0.0,
        init="xavier_uniform",
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        clip_norm=None,
        loss="squared_error",
        huber_delta=1.0,
    ):
        super().__init__(
            hidden_layer_sizes, activation, residual=residual, norm=norm, dropout=dropout, init=init,
            solver=solver, alpha=alpha, batch_size=batch_size, learning_rate_init=learning_rate_init,
            max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1,
            beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change, clip_norm=clip_norm,
        )
        self.loss = loss
        self.huber_delta = huber_delta

    def fit(self, X, y, sample_weight=None) -> "MLPRegressor":
        """Trains on (X, y), y of shape (n_samples,) or (n_samples, n_outputs), for up to
        ``max_iter`` epochs; ``sample_weight`` (n_samples,) weights each sample's loss."""
        return self._fit(X, y, sample_weight)

    def partial_fit(self, X, y, sample_weight=None) -> "MLPRegressor":
        """One epoch over (X, y) from the current network and optimizer state (the
        first call builds the network); early_stopping and tol do not apply."""
        return self._fit(X, y, sample_weight, incremental=True)

    def predict(self, X) -> np.ndarray:
        """The predictions, (n_samples,) for one output, (n_samples, n_outputs) for several,
        in the network's dtype."""
        X = self._validated_X(X)
        out = self.network_.predict(X)
        return out.ravel() if self.n_outputs_ == 1 else out

    def _network_loss(self) -> tuple[str, float]:
        loss = REGRESSION_LOSSES[check_choice(self.loss, "loss", tuple(REGRESSION_LOSSES))]
        return loss, check_positive_float(self.huber_delta, "huber_delta")

    def _architecture_params(self) -> dict:
        """The base's, and the loss (huber_delta only for the Huber loss, which alone reads it)."""
        loss, huber_delta = self._network_loss()
        return {**super()._architecture_params(), "loss": self.loss,
                "huber_delta": huber_delta if loss == "huber" else None}

    def _target_options(self) -> dict:
        return {"multi_output": True, "y_numeric": True}

    def _prepare_targets(self, y, first: bool, incremental: bool, classes=None) -> np.ndarray:
        y = np.asarray(y)
        outputs = 1 if y.ndim == 1 else y.shape[1]
        if first:
            self.n_outputs_ = outputs
        elif outputs != self.n_outputs_:
            raise ValueError(f"y: the network was fitted on {self.n_outputs_} targets, got {outputs}")
        return y.reshape(-1, outputs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """A fastmlp network as a scikit-learn classifier: softmax and cross-entropy over
    the classes (two outputs for a binary problem).

    Parameters
    ----------
    class_weight : None, "balanced" or dict, default=None
        Weights of the classes in the loss, multiplying ``sample_weight``:
        {label: weight} (labels not named weigh 1), or "balanced",
        n_samples / (n_classes · count of the class) over the training samples,
        the counts weighted by ``sample_weight`` when given (as scikit-learn's
        ``compute_class_weight``). partial_fit takes a dict only (scikit-learn's
        SGDClassifier refuses "balanced" there too).

    The other parameters and the attributes are :class:`MLPRegressor`'s (without
    loss and huber_delta), as is what a fit that raises leaves (every fitted
    attribute as it was), and

    Attributes
    ----------
    classes_ : ndarray
        The class labels, sorted; the network's output i is ``classes_[i]``.
    n_outputs_ : int
        The network's outputs: one per class (two for a binary problem).
    """

    def __init__(
        self,
        hidden_layer_sizes=(100,),
        activation="relu",
        *,
        residual=False,
        norm=None,
        dropout=0.0,
        init="xavier_uniform",
        solver="adam",
        alpha=0.0001,
        batch_size="auto",
        learning_rate_init=0.001,
        max_iter=200,
        shuffle=True,
        random_state=None,
        tol=1e-4,
        verbose=False,
        warm_start=False,
        momentum=0.9,
        nesterovs_momentum=True,
        early_stopping=False,
        validation_fraction=0.1,
        beta_1=0.9,
        beta_2=0.999,
        epsilon=1e-8,
        n_iter_no_change=10,
        clip_norm=None,
        class_weight=None,
    ):
        super().__init__(
            hidden_layer_sizes, activation, residual=residual, norm=norm, dropout=dropout, init=init,
            solver=solver, alpha=alpha, batch_size=batch_size, learning_rate_init=learning_rate_init,
            max_iter=max_iter, shuffle=shuffle, random_state=random_state, tol=tol, verbose=verbose,
            warm_start=warm_start, momentum=momentum, nesterovs_momentum=nesterovs_momentum,
            early_stopping=early_stopping, validation_fraction=validation_fraction, beta_1=beta_1,
            beta_2=beta_2, epsilon=epsilon, n_iter_no_change=n_iter_no_change, clip_norm=clip_norm,
        )
        self.class_weight = class_weight

    def fit(self, X, y, sample_weight=None) -> "MLPClassifier":
        """Trains on (X, y), y the labels (n_samples,), for up to ``max_iter`` epochs;
        ``sample_weight`` (n_samples,) weights each sample's loss."""
        return self._fit(X, y, sample_weight)

    def partial_fit(self, X, y, classes=None, sample_weight=None) -> "MLPClassifier":
        """One epoch over (X, y) from the current network and optimizer state. The
        first call needs ``classes``, every label there will be (the network's
        outputs); later calls may repeat it. early_stopping and tol do not apply."""
        return self._fit(X, y, sample_weight, incremental=True, classes=classes)

    def predict(self, X) -> np.ndarray:
        """The most probable class of every sample, a label from ``classes_``."""
        X = self._validated_X(X)
        return self.classes_[self.network_.predict(X)]

    def predict_proba(self, X) -> np.ndarray:
        """The probability of every class, (n_samples, n_classes), columns in ``classes_``'s order."""
        X = self._validated_X(X)
        return self.network_.predict_proba(X)

    def predict_log_proba(self, X) -> np.ndarray:
        """The log of :meth:`predict_proba`."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def _network_loss(self) -> tuple[str, float]:
        return "cross_entropy", 1.0

    def _target_options(self) -> dict:
        return {"multi_output": False}

    def _prepare_targets(self, y, first: bool, incremental: bool, classes=None) -> np.ndarray:
        check_classification_targets(y)
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"y: MLPClassifier takes binary or multiclass labels; got {kind} targets")
        if classes is not None:
            classes = np.unique(np.asarray(classes))
        if first:
            if classes is None:
                if incremental:
                    raise ValueError("classes: the first partial_fit needs classes, every label the "
                                     "classifier will see (np.unique(y_all))")
                classes = np.unique(y)
            if len(classes) < 2:
                raise ValueError(f"y: a classifier needs at least 2 classes; got 1 class ({_label(classes[0])!r})")
            self.classes_ = classes
            self.n_outputs_ = len(classes)
        elif classes is not None and not np.array_equal(classes, self.classes_):
            raise ValueError(f"classes: {classes.tolist()!r} differs from the classes of the first fit, "
                             f"{self.classes_.tolist()!r}")
        return self._indices(y)

    def _indices(self, y) -> np.ndarray:
        """The labels as indices into classes_; a label it does not hold is an error."""
        y = np.asarray(y)
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            raise ValueError(f"y: the label {_label(y[unknown][0])!r} is not among the classes of the first fit "
                             f"({self.classes_.tolist()!r}); give every class to the first fit "
                             f"(or partial_fit's classes)")
        return np.searchsorted(self.classes_, y).astype(np.int64)

    def _class_weight(self, y_network: np.ndarray, sample_weight: np.ndarray | None,
                      incremental: bool) -> np.ndarray | None:
        """Each sample's class weight, from class_weight: {label: weight} (1 for the labels
        it leaves out) or "balanced", as scikit-learn's compute_class_weight with
        sample_weight: Σw / (n_classes · Σw of the class), the sums over the training
        samples (counts without sample_weight) and n_classes the classes of positive
        weight among them, so that a weight of 2 and a repeated sample agree. Not
        Network.fit's class_weight, whose "balanced" divides by all of the network's
        outputs (a class absent from a warm start's data still counts there) and counts
        the rows left after its validation split: here the weights are folded into
        sample_weight before the early-stopping split, whose rows they then weigh too."""
        weights = self.class_weight
        if weights is None:
            return None
        if isinstance(weights, str):
            check_choice(weights, "class_weight", ("balanced",))
            if incremental:
                raise ValueError("class_weight: 'balanced' needs the whole training set, which partial_fit does not "
                                 "see; give a dict {label: weight} (e.g. from "
                                 "sklearn.utils.class_weight.compute_class_weight)")
            counts = np.bincount(y_network, weights=sample_weight, minlength=self.n_outputs_).astype(np.float64)
            present = counts > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                per_class = np.where(present, counts.sum() / (np.count_nonzero(present) * counts), 0.0)
            return per_class[y_network]
        if not isinstance(weights, dict):
            raise TypeError(f"class_weight: expected None, 'balanced' or a dict {{label: weight}}, got {weights!r}")
        per_class = np.ones(self.n_outputs_)
        known = self.classes_.tolist()
        for label, weight in weights.items():
            if _label(label) not in known:
                raise ValueError(f"class_weight: the label {_label(label)!r} is not among the classes {known!r}")
            per_class[known.index(_label(label))] = check_real(weight, f"class_weight[{_label(label)!r}]", 0.0,
                                                               float("inf"), high_open=True)
        return per_class[y_network]

    def _stratify(self, y_network, n_validation: int):
        """The labels, when every class can be in both parts (two samples or more of each,
        and room for each on either side); None otherwise, a plain random split."""
        counts = np.bincount(y_network, minlength=self.n_outputs_)
        n_classes = int(np.count_nonzero(counts))
        room = min(n_validation, len(y_network) - n_validation) >= n_classes
        return y_network if room and counts[counts > 0].min() >= 2 else None


def _same(built, now) -> bool:
    """Whether a parameter's value at build time and now are equal (values that do
    not compare to one truth value, such as arrays of another shape, are not)."""
    try:
        return bool(built == now)
    except (TypeError, ValueError):
        return False


def _label(value):
    """A label as Python shows it ('a', 3), not NumPy's repr (np.str_('a'))."""
    return value.item() if isinstance(value, np.generic) else value
