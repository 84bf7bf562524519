"""Network: a dense network trained by backpropagation in fastmlp's C++ engine.

All parameters live in one flat buffer, layer by layer (W_0, b_0, W_1, b_1, ...),
and their gradients in a second one with the same layout. ``weights``,
``biases``, ``params`` and ``grads`` are NumPy views into those buffers: writing
to them changes the network, and nothing is copied.
"""

from __future__ import annotations

import sys

import numpy as np

from . import _core
from ._validation import (
    as_float_dtype,
    check_choice,
    check_int,
    check_samples,
    check_targets,
)
from .optimizers import SGD, Optimizer

__all__ = ["Network", "History", "ACTIVATIONS", "LOSSES"]

ACTIVATIONS = ("linear", "relu", "leaky_relu", "sigmoid", "tanh", "swish", "gelu")
LOSSES = ("mse",)


class History:
    """What a fit recorded, one value per epoch: ``history["loss"]``."""

    def __init__(self):
        self.history: dict[str, list[float]] = {"loss": []}
        self.epoch: list[int] = []

    def _append(self, losses) -> None:
        start = len(self.epoch)
        self.epoch.extend(range(start, start + len(losses)))
        self.history["loss"].extend(float(v) for v in losses)

    def __repr__(self) -> str:
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


class ParameterList(list):
    """A list of views into the parameter buffer. Assigning ``lst[i] = array``
    copies the values into the buffer (shapes must match) instead of unlinking
    the entry from the network."""

    def __setitem__(self, i, value):
        if isinstance(i, slice):
            raise TypeError("assign parameters one layer at a time: lst[i] = array")
        view = list.__getitem__(self, i)
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ValueError(f"parameter {i}: expected shape {view.shape}, got {value.shape}")
        view[...] = value


def _parse_layer_sizes(layer_sizes) -> tuple[int, ...]:
    if isinstance(layer_sizes, (str, bytes)) or not hasattr(layer_sizes, "__len__"):
        raise TypeError(
            f"layer_sizes: expected a sequence of integers such as [1, 64, 32, 1], got {layer_sizes!r}"
        )
    if len(layer_sizes) < 2:
        raise ValueError(
            f"layer_sizes: expected at least two sizes (inputs and outputs), got {list(layer_sizes)!r}"
        )
    return tuple(check_int(size, f"layer_sizes[{i}]", minimum=1) for i, size in enumerate(layer_sizes))


class Network:
    """A dense network: Z_l = A_{l-1} · W_lᵀ + b_l, A_l = f_l(Z_l).

    Parameters
    ----------
    layer_sizes : sequence of int
        Inputs, hidden widths, outputs, e.g. ``[1, 64, 32, 1]``; each >= 1.
    activation : str or sequence of str
        Activation of the hidden layers, one name or one per hidden layer:
        linear, relu, leaky_relu, sigmoid, tanh, swish, gelu.
    output_activation : str
        Activation of the last layer (``"linear"`` for regression).
    loss : str
        ``"mse"``: L = mean over samples and outputs of (ŷ − y)², as
        torch.nn.MSELoss; its gradient is 2 (ŷ − y) / (batch · outputs).
    dtype : "float32" or "float64"
        float32 is the fast default; float64 for gradient checks.
    seed : int or None
        Seeds the network's generator (He-normal initial weights, shuffling).
        None draws a fresh seed; ``net.seed`` tells which.
    """

    def __init__(
        self,
        layer_sizes,
        activation="relu",
        *,
        output_activation: str = "linear",
        loss: str = "mse",
        dtype="float32",
        seed: int | None = None,
    ):
        sizes = _parse_layer_sizes(layer_sizes)
        n_layers = len(sizes) - 1
        if isinstance(activation, str):
            hidden = [check_choice(activation, "activation", ACTIVATIONS)] * (n_layers - 1)
        elif hasattr(activation, "__len__"):
            if len(activation) != n_layers - 1:
                raise ValueError(
                    f"activation: expected one name or {n_layers - 1} names (one per hidden layer), "
                    f"got {len(activation)}"
                )
            hidden = [check_choice(a, f"activation[{i}]", ACTIVATIONS) for i, a in enumerate(activation)]
        else:
            raise TypeError(f"activation: expected a name such as 'relu', got {activation!r}")
        output_activation = check_choice(output_activation, "output_activation", ACTIVATIONS)
        self._loss = check_choice(loss, "loss", LOSSES)
        self._dtype = as_float_dtype(dtype)
        if seed is None:
            seed = int(np.random.SeedSequence().entropy) % (1 << 63)  # type: ignore[arg-type]
        self._seed = check_int(seed, "seed", minimum=0)
        if self._seed >= 1 << 64:
            raise ValueError(f"seed: expected an integer below 2**64, got {self._seed}")
        self._sizes = sizes
        self._activations = tuple(hidden) + (output_activation,)
        core_class = _core.Network32 if self._dtype == np.float32 else _core.Network64
        self._core = core_class(list(sizes), list(self._activations), self._seed)
        self._make_views()
        self._last_batch: int | None = None

    def _make_views(self) -> None:
        params, grads = self._core.params, self._core.grads
        self._params, self._grads = params, grads
        w, b, gw, gb = [], [], [], []
        for inputs, outputs, w_off, b_off, _ in self._core.layers:
            w.append(params[w_off : w_off + inputs * outputs].reshape(outputs, inputs))
            b.append(params[b_off : b_off + outputs])
            gw.append(grads[w_off : w_off + inputs * outputs].reshape(outputs, inputs))
            gb.append(grads[b_off : b_off + outputs])
        self._weights, self._biases = ParameterList(w), ParameterList(b)
        self._grad_weights, self._grad_biases = gw, gb

    # ---- description ---------------------------------------------------------
    @property
    def layer_sizes(self) -> tuple[int, ...]:
        return self._sizes

    @property
    def activations(self) -> tuple[str, ...]:
        """Activation of every layer, the output layer's last."""
        return self._activations

    @property
    def loss(self) -> str:
        return self._loss

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def seed(self) -> int:
        return self._seed

    @property
    def n_inputs(self) -> int:
        return self._sizes[0]

    @property
    def n_outputs(self) -> int:
        return self._sizes[-1]

    @property
    def n_params(self) -> int:
        return int(self._params.size)

    # ---- parameters (views, no copies) ----------------------------------------------
    @property
    def params(self) -> np.ndarray:
        """All parameters, one flat view: W_0, b_0, W_1, b_1, ..."""
        return self._params

    @property
    def grads(self) -> np.ndarray:
        """All gradients, a flat view with the layout of ``params``."""
        return self._grads

    @property
    def weights(self) -> list[np.ndarray]:
        """Per-layer weight views, W_l of shape (outputs, inputs)."""
        return self._weights

    @property
    def biases(self) -> list[np.ndarray]:
        """Per-layer bias views, b_l of shape (outputs,)."""
        return self._biases

    def __repr__(self) -> str:
        return (
            f"Network({list(self._sizes)}, activations={list(self._activations)}, loss={self._loss!r}, "
            f"dtype={self._dtype.name!r}, seed={self._seed})"
        )

    # ---- the article's steps ----------------------------------------------------------
    def forward(self, X) -> np.ndarray:
        """Forward pass (n_samples, n_outputs); keeps the cache that backward uses."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        out = self._core.forward(X)
        self._last_batch = X.shape[0]
        return out

    def backward(self, X, y, y_pred):
        """Backward pass after ``forward(X)``: fills ``grads`` with ∂L/∂params for
        this batch (replacing what was there) and returns ``(grads_w, grads_b)``,
        lists of views into it."""
        self._backward(X, y, y_pred)
        return list(self._grad_weights), list(self._grad_biases)

    def _backward(self, X, y, y_pred, article_scale: bool = False) -> None:
        """Backpropagates dL/dŷ into ``grads``: the MSE gradient 2 (ŷ − y) / (batch ·
        outputs), or with article_scale the article's (ŷ − y) / batch."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        y = check_targets(y, "y", X.shape[0], self.n_outputs, self._dtype)
        y_pred = check_targets(y_pred, "y_pred", X.shape[0], self.n_outputs, self._dtype)
        if self._last_batch != X.shape[0]:
            raise ValueError(
                "backward: call forward(X) on this batch first (the cache holds "
                f"{self._last_batch if self._last_batch is not None else 'no'} samples, X has {X.shape[0]})"
            )
        d_out = np.empty_like(y_pred)
        scale = 1.0 / X.shape[0] if article_scale else 2.0 / y_pred.size
        _core.mse_backward(d_out, y_pred, y, scale)
        self._core.backward(X, d_out)

    def zero_grad(self) -> None:
        """Sets ``grads`` to zero (``backward`` overwrites them anyway)."""
        self._core.zero_grad()

    def step(self, optimizer: Optimizer) -> None:
        """Applies one update from the current ``grads``."""
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer: expected an optimizer such as fm.SGD(lr=0.01), got {optimizer!r}")
        self._check_optimizer_fits_dtype(optimizer)
        optimizer._apply(self._core)

    def _check_optimizer_fits_dtype(self, optimizer: Optimizer) -> None:
        if optimizer.lr > float(np.finfo(self._dtype).max):
            raise ValueError(f"lr: {optimizer.lr!r} is not finite in the network's dtype {self._dtype.name}")

    # ---- training and inference ------------------------------------------------------
    def fit(
        self,
        X,
        y,
        epochs: int = 1,
        batch_size: int | None = None,
        optimizer: Optimizer | None = None,
        shuffle: bool = True,
        verbose: int = 0,
    ) -> History:
        """Trains from the current weights; the whole loop runs in C++ with the GIL released.

        batch_size None means full batch. With mini-batches and ``shuffle``, the
        order is drawn from the network's seeded generator each epoch. Each
        epoch's loss is the mean of its batches' losses, each measured before
        that batch's update (the article's convention). If the loss or a
        gradient turns non-finite the fit stops with FloatingPointError and the
        weights keep their last finite values.
        """
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        y = check_targets(y, "y", X.shape[0], self.n_outputs, self._dtype)
        epochs = check_int(epochs, "epochs", minimum=1)
        batch = 0 if batch_size is None else check_int(batch_size, "batch_size", minimum=1)
        optimizer = SGD() if optimizer is None else optimizer
        if not isinstance(optimizer, SGD):
            raise TypeError(f"optimizer: expected fm.SGD(lr=...), got {optimizer!r}")
        self._check_optimizer_fits_dtype(optimizer)
        if not isinstance(shuffle, (bool, np.bool_)):
            raise TypeError(f"shuffle: expected True or False, got {shuffle!r}")
        verbose = check_int(verbose, "verbose", minimum=0)

        history = History()
        # Silent: one call for the whole fit. Verbose: one call per epoch, to print between them.
        chunk = epochs if verbose == 0 else 1
        losses = np.empty(chunk, dtype=self._dtype)
        for start in range(0, epochs, chunk):
            status, done, failed_epoch, failed_batch = self._core.fit(
                X, y, chunk, batch, optimizer.lr, bool(shuffle), losses
            )
            history._append(losses[:done])
            if status == "non_finite":
                error = FloatingPointError(
                    f"fit: the loss or an update became non-finite in epoch {start + failed_epoch} "
                    f"(batch {failed_batch}); the weights keep their last finite values. "
                    f"Try a smaller learning rate (lr={optimizer.lr}) or scaled inputs."
                )
                error.history = history  # type: ignore[attr-defined]
                raise error
            if verbose:
                print(f"Epoch {start + 1}/{epochs} - loss: {losses[0]:.6g}", file=sys.stdout, flush=True)
        self._last_batch = None
        return history

    def predict(self, X) -> np.ndarray:
        """Outputs (n_samples, n_outputs), computed in chunks without threads' cache."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        out = np.empty((X.shape[0], self.n_outputs), dtype=self._dtype)
        self._core.predict(X, out)
        return out

    def evaluate(self, X, y) -> dict[str, float]:
        """``{"loss": L}`` on (X, y) with the network's loss."""
        X = check_samples(X, "X", self.n_inputs, self._dtype)
        y = check_targets(y, "y", X.shape[0], self.n_outputs, self._dtype)
        prediction = self.predict(X)
        return {"loss": float(_core.mse_forward(prediction, y))}

    # ---- copies -------------------------------------------------------------------------
    def astype(self, dtype) -> "Network":
        """A new network with the same architecture, seed and parameters in ``dtype``."""
        dtype = as_float_dtype(dtype)
        clone = Network(
            self._sizes,
            list(self._activations[:-1]),
            output_activation=self._activations[-1],
            loss=self._loss,
            dtype=dtype,
            seed=self._seed,
        )
        clone.params[...] = self.params
        return clone

    def copy(self) -> "Network":
        return self.astype(self._dtype)

    def __reduce__(self):
        return (_rebuild, (self._sizes, self._activations, self._loss, self._dtype.name, self._seed,
                           np.array(self.params)))


def _rebuild(sizes, activations, loss, dtype, seed, params) -> Network:
    net = Network(sizes, list(activations[:-1]), output_activation=activations[-1], loss=loss,
                  dtype=dtype, seed=seed)
    net.params[...] = params
    return net
