"""The twin of cpp/src/network.cpp: the whole network on the engine's flat parameter
layout (W_0, b_0, W_1, b_1, ...), its initialisers, and its fit with the same
shuffle over the same generator.
"""

from __future__ import annotations

import math
import operator

import numpy as np

from .activation import ACTIVATIONS, activation_backward, activation_forward
from .loss import _check_loss, loss_backward, loss_forward
from .optimizer import sgd_update
from .random import Rng


class Network:
    """The whole network in NumPy, on the engine's flat layout.

    ``activations`` has one name per layer, the output layer's last. ``loss`` is
    one of :data:`LOSSES` (``delta`` is Huber's δ), applied to the raw output ŷ
    of the last layer (logits for the cross-entropies); see :func:`loss_forward`.
    The default is MSE: L = mean((ŷ − y)²) over samples and outputs,
    dL/dŷ = 2 (ŷ − y) / (B · O).

    ``rng`` is the network's :class:`Rng`, seeded with ``seed``. Without ``params`` the
    weights are drawn from it as the engine draws them (see :func:`init_params`; ``init``
    is one name for :func:`resolve_init` or one per layer), so that a fastmlp.Network
    with the same sizes, activations, init and seed starts with the same weights and the
    same generator state. Given ``params``, nothing is drawn; :meth:`from_network` copies
    the engine's generator state.
    """

    def __init__(self, layer_sizes, activations, dtype="float32", params=None, seed=0, *, loss="mse", delta=1.0,
                 init="auto"):
        self.layer_sizes = tuple(int(s) for s in layer_sizes)
        self.activations = tuple(activations)
        if len(self.activations) != len(self.layer_sizes) - 1:
            raise ValueError("activations: expected one name per layer")
        self.loss_name = _check_loss(loss, delta)
        self.delta = float(delta)
        self.dtype = np.dtype(dtype)
        self.offsets = []
        offset = 0
        for fan_in, fan_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            self.offsets.append((offset, offset + fan_in * fan_out))
            offset += fan_in * fan_out + fan_out
        self.rng = Rng(seed)
        if params is None:  # the engine's draws: the same seed and init give the same weights
            inits = [init] * len(self.activations) if isinstance(init, str) else list(init)
            if len(inits) != len(self.activations):
                raise ValueError(f"init: expected one scheme or {len(self.activations)} (one per layer); got {init!r}")
            schemes = [resolve_init(i, a) for i, a in zip(inits, self.activations)]
            params = _draw_params(_check_sizes(self.layer_sizes), _check_schemes(schemes, len(schemes)), self.rng)
        self.params = np.array(params, dtype=self.dtype)
        if self.params.shape != (offset,):
            raise ValueError(f"params: expected {offset} values, got shape {self.params.shape}")
        self.grads = np.zeros_like(self.params)
        self.weights, self.biases, self.grad_weights, self.grad_biases = [], [], [], []
        for (w_off, b_off), fan_in, fan_out in zip(self.offsets, self.layer_sizes[:-1], self.layer_sizes[1:]):
            self.weights.append(self.params[w_off:b_off].reshape(fan_out, fan_in))
            self.biases.append(self.params[b_off : b_off + fan_out])
            self.grad_weights.append(self.grads[w_off:b_off].reshape(fan_out, fan_in))
            self.grad_biases.append(self.grads[b_off : b_off + fan_out])
        self.cache = None

    @classmethod
    def from_network(cls, net, dtype=None):
        """The NumPy twin of a fastmlp.Network (or of another reference Network), with a copy
        of its parameters, of its generator's state (so that a shuffled :meth:`fit` draws
        what the engine's would), and of its loss and Huber's δ where the network has them."""
        loss = getattr(net, "loss", "mse")
        delta = getattr(net, "huber_delta", getattr(net, "delta", 1.0))
        twin = cls(net.layer_sizes, net.activations, dtype or net.dtype, params=net.params,
                   loss=loss if isinstance(loss, str) else "mse",
                   delta=delta if isinstance(delta, (int, float)) else 1.0)
        state = _generator_state(net)
        if state is not None:
            twin.rng.set_state(*state)
        return twin

    def forward(self, X):
        A = np.asarray(X, dtype=self.dtype)
        zs, activations = [], [A]
        for W, b, activation in zip(self.weights, self.biases, self.activations):
            Z = A @ W.T + b
            A = activation_forward(Z, activation)
            zs.append(Z)
            activations.append(A)
        self.cache = (zs, activations)
        return A

    predict = forward
    decision_function = forward  # the engine's raw outputs; the twin keeps no separate cache

    def backward(self, X, y, y_pred):
        """Fills ``grads`` (replacing it) and returns (grads_w, grads_b)."""
        y = np.asarray(y, dtype=self.dtype).reshape(y_pred.shape)
        return self.backward_output(X, loss_backward(self.loss_name, y_pred, y, self.delta))

    def backward_output(self, X, d_output):
        """Backpropagates dL/d(output) (B, O) from the last forward: fills ``grads``
        (replacing it) and returns (grads_w, grads_b), as fastmlp.Network.backward_output."""
        zs, activations = self.cache
        dA = np.asarray(d_output, dtype=self.dtype)
        for layer in range(len(self.weights) - 1, -1, -1):
            dZ = activation_backward(dA, zs[layer], activations[layer + 1], self.activations[layer])
            self.grad_weights[layer][...] = dZ.T @ activations[layer]
            self.grad_biases[layer][...] = dZ.sum(axis=0)
            if layer > 0:
                dA = dZ @ self.weights[layer]
        return self.grad_weights, self.grad_biases

    def step(self, lr):
        sgd_update(self.params, self.grads, lr)

    def segments(self):
        """[(offset, size), ...]: each parameter tensor of the flat buffer, layer by
        layer, (w_off, O·I) then (b_off, O). LAMB's trust ratios are per segment."""
        segments = []
        for (w_off, b_off), fan_in, fan_out in zip(self.offsets, self.layer_sizes[:-1], self.layer_sizes[1:]):
            segments.append((w_off, fan_out * fan_in))
            segments.append((b_off, fan_out))
        return segments

    def loss(self, X, y):
        """The network's loss (:func:`loss_forward`) on (X, y)."""
        y = np.asarray(y).reshape(-1, self.layer_sizes[-1])
        return loss_forward(self.loss_name, self.forward(X), y, self.delta)

    def fit(self, X, y, epochs=1, batch_size=None, lr=0.01, optimizer=None, shuffle=False):
        """Training over mini-batches, as the engine's fit (cpp/src/network.cpp).

        With ``shuffle`` (False by default here; the engine's default is True) and a
        batch smaller than X, every epoch takes the samples in a fresh order drawn from
        :attr:`rng` by :func:`shuffled_order`, and its batches are consecutive runs of
        that order (the last one short when ``batch_size`` does not divide n). Otherwise
        the batches are X's rows in order, and the generator is not drawn from.

        Each epoch's loss is the mean of its batches' losses weighted by their rows,
        each measured before that batch's update, as the engine does.

        With ``optimizer=None``: plain SGD, p ← p − lr · ∇L; returns the list of epoch
        losses. With an :class:`Optimizer` (``lr`` is then ignored): its ``step`` after
        each batch; returns ``{"loss": [...], "grad_norm": [...], "lr": [...]}``, per
        epoch the loss as above, the mean of the steps' gradient norms (before
        clipping) and the learning rate of the epoch's last step.
        """
        X = np.asarray(X, dtype=self.dtype)
        y = np.asarray(y, dtype=self.dtype).reshape(len(X), -1)
        n = len(X)
        batch_size = n if batch_size is None else min(batch_size, n)
        shuffle = shuffle and batch_size < n  # a full batch is never shuffled: no draws
        losses, norms, lrs = [], [], []
        for _ in range(epochs):
            order = shuffled_order(self.rng, n) if shuffle else np.arange(n)
            total, epoch_norms, last_lr = 0.0, [], lr
            for start in range(0, n, batch_size):
                rows = order[start : start + batch_size]
                xb, yb = X[rows], y[rows]
                pred = self.forward(xb)
                total += loss_forward(self.loss_name, pred, yb, self.delta) * len(xb)
                self.backward(xb, yb, pred)
                if optimizer is None:
                    self.step(lr)
                else:
                    info = optimizer.step(self.params, self.grads, self.segments())
                    epoch_norms.append(info["grad_norm"])
                    last_lr = info["lr"]
            losses.append(total / n)
            norms.append(math.fsum(epoch_norms) / len(epoch_norms) if epoch_norms else 0.0)
            lrs.append(last_lr)
        if optimizer is None:
            return losses
        return {"loss": losses, "grad_norm": norms, "lr": lrs}


def shuffled_order(rng, n):
    """The engine's order of n samples for one epoch: Fisher–Yates over 0..n−1 from
    ``rng`` (an :class:`Rng`): for i = n−1 down to 1, swap order[i] and order[rng.below(i + 1)].
    Each epoch starts again from 0..n−1, so the order depends only on the generator."""
    order = list(range(n))
    for i in range(n - 1, 0, -1):
        j = rng.below(i + 1)
        order[i], order[j] = order[j], order[i]
    return np.array(order, dtype=np.intp)


def _generator_state(net):
    """The state of ``net``'s generator as :meth:`Rng.state` gives it: a reference Network's,
    or a fastmlp.Network's engine's (its snapshot()); None if it has none."""
    if isinstance(getattr(net, "rng", None), Rng):
        return net.rng.state()
    core = getattr(net, "_core", None)
    return core.snapshot()[4] if hasattr(core, "snapshot") else None


# The engine's init schemes in its enum's order; the reference's own copy (tests/test_names.py).
INIT_SCHEMES = ("he_normal", "he_uniform", "xavier_normal", "xavier_uniform", "lecun_normal", "lecun_uniform")
_INIT_ALIASES = {
    "he": "he_normal",
    "xavier": "xavier_normal",
    "glorot": "xavier_normal",
    "glorot_normal": "xavier_normal",
    "glorot_uniform": "xavier_uniform",
    "lecun": "lecun_normal",
}


def resolve_init(init, activation) -> str:
    """The full initialiser name (one of :data:`INIT_SCHEMES`) for a layer.

    "auto" → "xavier_normal" for tanh and sigmoid layers, "he_normal" for every other
    activation; "he" → "he_normal"; "xavier", "glorot" → "xavier_normal";
    "glorot_normal" / "glorot_uniform" → "xavier_normal" / "xavier_uniform";
    "lecun" → "lecun_normal"; the six full names pass through. Anything else,
    or "auto" with an unknown activation, raises ValueError.
    """
    if init == "auto":
        if not isinstance(activation, str) or activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}; got {activation!r}")
        return "xavier_normal" if activation in ("tanh", "sigmoid") else "he_normal"
    if isinstance(init, str):
        if init in INIT_SCHEMES:
            return init
        if init in _INIT_ALIASES:
            return _INIT_ALIASES[init]
    choices = ", ".join(("auto", *INIT_SCHEMES, *_INIT_ALIASES))
    raise ValueError(f"init: expected one of {choices}; got {init!r}")


def init_params(layer_sizes, schemes, seed, dtype="float32"):
    """The flat buffer W_0 (O_0×I_0, row-major), b_0 (O_0), W_1, b_1, ... as the engine fills it.

    One :class:`Rng` (``seed``) for the whole network; layer by layer, the weights in
    row-major order, then the biases, all zero. ``schemes`` has one name of
    :data:`INIT_SCHEMES` per layer (a single name applies to every layer); with
    fan_in = I_l, fan_out = O_l and u = uniform():

    - "he_normal": normal() · √(2 / fan_in)        "he_uniform": (2u − 1) · √(6 / fan_in)
    - "xavier_normal": normal() · √(2 / (fan_in + fan_out))
    - "xavier_uniform": (2u − 1) · √(6 / (fan_in + fan_out))
    - "lecun_normal": normal() · √(1 / fan_in)     "lecun_uniform": (2u − 1) · √(3 / fan_in)

    The square root is taken once per layer; the values are computed in float64 and
    the buffer is then cast to ``dtype`` (float32 or float64).
    """
    sizes = _check_sizes(layer_sizes)
    schemes = _check_schemes([schemes] * (len(sizes) - 1) if isinstance(schemes, str) else list(schemes),
                             len(sizes) - 1)
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype: expected float32 or float64; got {dtype}")
    return _draw_params(sizes, schemes, Rng(seed)).astype(dtype)


def _check_sizes(layer_sizes):
    sizes = [operator.index(s) for s in layer_sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"layer_sizes: expected at least two sizes, each >= 1; got {sizes}")
    return sizes


def _check_schemes(schemes, layers):
    if len(schemes) != layers:
        raise ValueError(f"schemes: expected one name per layer ({layers}); got {len(schemes)}")
    for scheme in schemes:
        if scheme not in INIT_SCHEMES:
            raise ValueError(f"schemes: expected names from {', '.join(INIT_SCHEMES)}; got {scheme!r}")
    return schemes


def _draw_params(sizes, schemes, rng):
    """:func:`init_params`'s float64 values, drawn from ``rng`` (which moves on)."""
    values = np.zeros(sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:])), dtype=np.float64)
    offset = 0
    for fan_in, fan_out, scheme in zip(sizes[:-1], sizes[1:], schemes):
        family, distribution = scheme.split("_")
        if family == "he":
            numerator, denominator = (2.0 if distribution == "normal" else 6.0), fan_in
        elif family == "xavier":
            numerator, denominator = (2.0 if distribution == "normal" else 6.0), fan_in + fan_out
        else:  # lecun
            numerator, denominator = (1.0 if distribution == "normal" else 3.0), fan_in
        scale = math.sqrt(numerator / float(denominator))
        count = fan_in * fan_out
        if distribution == "normal":
            weights = [rng.normal() * scale for _ in range(count)]
        else:
            weights = [(2.0 * rng.uniform() - 1.0) * scale for _ in range(count)]
        values[offset : offset + count] = weights
        offset += count + fan_out  # the biases stay zero
    return values


# The kinds of layer LayerNetwork runs: the reference's own copy of the engine's table
# (network.hpp: layer_kind_names; tests/test_names.py compares them).
LAYER_TYPES = ("dense", "layer_norm", "batch_norm", "activation", "dropout", "residual")


class LayerNetwork:
    """The twin of the engine's layer list (cpp/src/network.cpp): dense, layer norm,
    batch norm, activation, dropout and residual layers, one after the other, on the
    engine's flat parameter and state buffers, each layer by its NumPy twin
    (:mod:`fastmlp.reference.layers`, :mod:`fastmlp.reference.activation`).

    ``layers`` is the engine's flat list (``fastmlp.Network._layers``: dicts with
    "type", "inputs", "outputs", "activation", "eps", "momentum", "p",
    "skip_from", "weight_offset", "bias_offset", "state_offset"). Dropout masks are
    drawn from :attr:`rng` as the engine draws them: layer after layer, each
    (batch × width) mask at once. :meth:`from_network` copies a fastmlp.Network's
    layers, parameters, running statistics and generator state."""

    def __init__(self, layers, params, state, dtype, seed=0):
        self.layers = [dict(layer) for layer in layers]
        self.dtype = np.dtype(dtype)
        self.params = np.array(params, dtype=self.dtype)
        self.state = np.array(state, dtype=self.dtype)
        self.grads = np.zeros_like(self.params)
        self.rng = Rng(seed)
        self.cache = None

    @classmethod
    def from_network(cls, net, dtype=None):
        twin = cls(net._layers, net.params, net.state, dtype or net.dtype)
        state = _generator_state(net)
        if state is not None:
            twin.rng.set_state(*state)
        return twin

    def _tensors(self, layer):
        w, b = layer["weight_offset"], layer["bias_offset"]
        if layer["type"] == "dense":
            return self.params[w : b].reshape(layer["outputs"], layer["inputs"]), self.params[b : b + layer["outputs"]]
        return self.params[w : w + layer["inputs"]], self.params[b : b + layer["inputs"]]

    def forward(self, X, training=True):
        """The output; training mode keeps what :meth:`backward` reads (and moves
        batch norm's running statistics, and draws dropout masks)."""
        from . import layers as twins

        A = np.asarray(X, dtype=self.dtype)
        inputs, saved = [], []
        for layer in self.layers:
            inputs.append(A)
            kind, keep = layer["type"], None
            if kind == "dense":
                W, b = self._tensors(layer)
                A = A @ W.T + b
            elif kind == "layer_norm":
                gain, bias = self._tensors(layer)
                A, xhat, rstd = twins.layer_norm(A, gain, bias, layer["eps"])
                keep = (xhat, rstd)
            elif kind == "batch_norm":
                gain, bias = self._tensors(layer)
                at, width = layer["state_offset"], layer["inputs"]
                mean, var = self.state[at : at + width], self.state[at + width : at + 2 * width]
                if training:
                    A, xhat, rstd = twins.batch_norm(A, gain, bias, mean, var, training=True, eps=layer["eps"],
                                                     momentum=layer["momentum"])
                    keep = (xhat, rstd)
                else:
                    A = twins.batch_norm(A, gain, bias, mean, var, training=False, eps=layer["eps"])
            elif kind == "activation":
                A = activation_forward(A, layer["activation"])
            elif kind == "dropout":
                if training:
                    keep = twins.dropout_mask(A.shape, layer["p"], self.rng)
                    A = twins.dropout(A, keep, layer["p"])
            else:  # residual
                A = twins.residual_add(A, inputs[layer["skip_from"]])
            saved.append((keep, A))
        if training:
            self.cache = (inputs, saved)
        return A

    def predict(self, X):
        return self.forward(X, training=False)

    def backward_output(self, d_output):
        """Fills ``grads`` (replacing it) from dL/d(output) of the last training forward."""
        from . import layers as twins

        inputs, saved = self.cache
        d = np.asarray(d_output, dtype=self.dtype)
        skip = {}
        self.grads[...] = 0
        for i in range(len(self.layers) - 1, -1, -1):
            layer, (keep, out) = self.layers[i], saved[i]
            kind = layer["type"]
            w, b = layer["weight_offset"], layer["bias_offset"]
            if kind == "dense":
                W, _ = self._tensors(layer)
                self.grads[w:b] = (d.T @ inputs[i]).ravel()
                self.grads[b : b + layer["outputs"]] = d.sum(axis=0)
                d = d @ W
            elif kind in ("layer_norm", "batch_norm"):
                gain, _ = self._tensors(layer)
                backward = twins.layer_norm_backward if kind == "layer_norm" else twins.batch_norm_backward
                d, d_gain, d_bias = backward(d, keep[0], keep[1], gain)
                self.grads[w : w + layer["inputs"]] = d_gain
                self.grads[b : b + layer["inputs"]] = d_bias
            elif kind == "activation":
                d = activation_backward(d, inputs[i], out, layer["activation"])
            elif kind == "dropout":
                d = twins.dropout_backward(d, keep, layer["p"])
            else:
                skip[layer["skip_from"]] = d
            if i in skip:
                d = d + skip.pop(i)
        return self.grads
