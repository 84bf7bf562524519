"""NumPy twins of fastmlp's kernels and of the whole network: the oracle.

Every function here has the name and signature of its fast twin in
:mod:`fastmlp.kernels`, and :class:`Network` mirrors the C++ engine on the same
flat parameter layout (W_0, b_0, W_1, b_1, ...). Written for clarity, not
speed; the tests hold the C++ to these.
"""

from __future__ import annotations

import math

import numpy as np

from ._article import NeuralNetwork  # the article's own class, verbatim: fastmlp.NeuralNetwork's twin

__all__ = [
    "gemm",
    "activation_forward",
    "activation_backward",
    "bias_add_forward",
    "bias_add_backward",
    "bias_activation_forward",
    "activation_bias_backward",
    "mse_forward",
    "mse_backward",
    "sgd_update",
    "Network",
    "NeuralNetwork",
    "LEAKY_RELU_SLOPE",
]

LEAKY_RELU_SLOPE = 0.01
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _float_dtype(*arrays) -> np.dtype:
    return np.dtype(np.float32) if all(np.asarray(a).dtype == np.float32 for a in arrays) else np.dtype(np.float64)


def gemm(a, b, c=None, *, alpha=1.0, beta=0.0, trans_a=False, trans_b=False):
    """C = alpha · op(a) · op(b) + beta · C (beta ignored when c is None; c updated in place)."""
    dtype = _float_dtype(a, b) if c is None else _float_dtype(a, b, c)
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    product = (a.T if trans_a else a) @ (b.T if trans_b else b)
    if c is None:
        return (dtype.type(alpha) * product).astype(dtype)
    c[...] = dtype.type(alpha) * product + (dtype.type(beta) * c if beta != 0 else 0)
    return c


def _sigmoid(z):
    e = np.exp(-np.abs(z))  # never overflows
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e)).astype(z.dtype)


def _gelu_cdf(z):  # Φ(z) = erfc(−z/√2) / 2
    return (0.5 * _erfc(-z.astype(np.float64) / math.sqrt(2)).astype(np.float64)).astype(z.dtype)


def _gelu_pdf(z):
    return (np.exp(-0.5 * z.astype(np.float64) ** 2) / math.sqrt(2 * math.pi)).astype(z.dtype)


def activation_forward(z, activation="relu", out=None):
    z = np.asarray(z, dtype=_float_dtype(z))
    if activation == "linear":
        a = z.copy()
    elif activation == "relu":
        a = np.where(z > 0, z, 0).astype(z.dtype)
    elif activation == "leaky_relu":
        a = np.where(z > 0, z, z.dtype.type(LEAKY_RELU_SLOPE) * z)
    elif activation == "sigmoid":
        a = _sigmoid(z)
    elif activation == "tanh":
        a = np.tanh(z)
    elif activation == "swish":
        a = z * _sigmoid(z)
    elif activation == "gelu":
        a = z * _gelu_cdf(z)
    else:
        raise ValueError(f"unknown activation {activation!r}")
    if out is not None:
        out[...] = a
        return out
    return a


def activation_backward(da, z, a=None, activation="relu", out=None):
    """dz = da ⊙ f'(z)."""
    dtype = _float_dtype(da, z)
    z = np.asarray(z, dtype=dtype)
    da = np.asarray(da, dtype=dtype)
    a = activation_forward(z, activation) if a is None else np.asarray(a, dtype=dtype)
    one = dtype.type(1)
    if activation == "linear":
        derivative = np.ones_like(z)
    elif activation == "relu":
        derivative = (z > 0).astype(dtype)
    elif activation == "leaky_relu":
        derivative = np.where(z > 0, one, dtype.type(LEAKY_RELU_SLOPE))
    elif activation == "sigmoid":
        derivative = a * (one - a)
    elif activation == "tanh":
        derivative = one - a * a
    elif activation == "swish":
        s = _sigmoid(z)
        derivative = s + z * s * (one - s)
    elif activation == "gelu":
        derivative = _gelu_cdf(z) + z * _gelu_pdf(z)
    else:
        raise ValueError(f"unknown activation {activation!r}")
    dz = (da * derivative).astype(dtype)
    if out is not None:
        out[...] = dz
        return out
    return dz


def bias_add_forward(z, bias):
    dtype = _float_dtype(z, bias)
    return np.asarray(z, dtype=dtype) + np.asarray(bias, dtype=dtype)


def bias_add_backward(dz):
    dz = np.asarray(dz, dtype=_float_dtype(dz))
    return dz.sum(axis=0)


def bias_activation_forward(z, bias, activation="relu"):
    """(z + bias, f(z + bias))."""
    z = bias_add_forward(z, bias)
    return z, activation_forward(z, activation)


def activation_bias_backward(da, z, a=None, activation="relu"):
    """(dz, column sums of dz) with dz = da ⊙ f'(z)."""
    dz = activation_backward(da, z, a, activation)
    return dz, bias_add_backward(dz)


def mse_forward(pred, target):
    dtype = _float_dtype(pred, target)
    diff = np.asarray(pred, dtype=dtype) - np.asarray(target, dtype=dtype)
    return float(np.mean(diff.astype(np.float64) ** 2)) if diff.size else 0.0


def mse_backward(pred, target, scale=None):
    dtype = _float_dtype(pred, target)
    pred = np.asarray(pred, dtype=dtype)
    scale = 2.0 / max(pred.size, 1) if scale is None else float(scale)
    return (dtype.type(scale) * (pred - np.asarray(target, dtype=dtype))).astype(dtype)


def sgd_update(params, grads, lr):
    params -= params.dtype.type(lr) * np.asarray(grads, dtype=params.dtype)
    return params


class Network:
    """The whole network in NumPy, on the engine's flat layout.

    ``activations`` has one name per layer, the output layer's last. The loss is
    MSE: L = mean((ŷ − y)²) over samples and outputs, dL/dŷ = 2 (ŷ − y) / (B · O).
    """

    def __init__(self, layer_sizes, activations, dtype="float32", params=None, seed=0):
        self.layer_sizes = tuple(int(s) for s in layer_sizes)
        self.activations = tuple(activations)
        if len(self.activations) != len(self.layer_sizes) - 1:
            raise ValueError("activations: expected one name per layer")
        self.dtype = np.dtype(dtype)
        self.offsets = []
        offset = 0
        for fan_in, fan_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            self.offsets.append((offset, offset + fan_in * fan_out))
            offset += fan_in * fan_out + fan_out
        if params is None:  # He-normal weights, zero biases (NumPy's generator, not the engine's)
            rng = np.random.default_rng(seed)
            params = np.zeros(offset)
            for (w_off, b_off), fan_in, fan_out in zip(self.offsets, self.layer_sizes[:-1], self.layer_sizes[1:]):
                params[w_off:b_off] = rng.standard_normal(fan_in * fan_out) * math.sqrt(2.0 / fan_in)
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
        """The NumPy twin of a fastmlp.Network, with a copy of its parameters."""
        return cls(net.layer_sizes, net.activations, dtype or net.dtype, params=net.params)

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

    def backward(self, X, y, y_pred):
        """Fills ``grads`` (replacing it) and returns (grads_w, grads_b)."""
        zs, activations = self.cache
        y = np.asarray(y, dtype=self.dtype).reshape(y_pred.shape)
        dA = mse_backward(y_pred, y)
        for layer in range(len(self.weights) - 1, -1, -1):
            dZ = activation_backward(dA, zs[layer], activations[layer + 1], self.activations[layer])
            self.grad_weights[layer][...] = dZ.T @ activations[layer]
            self.grad_biases[layer][...] = dZ.sum(axis=0)
            if layer > 0:
                dA = dZ @ self.weights[layer]
        return self.grad_weights, self.grad_biases

    def step(self, lr):
        sgd_update(self.params, self.grads, lr)

    def loss(self, X, y):
        return mse_forward(self.forward(X), np.asarray(y).reshape(-1, self.layer_sizes[-1]))

    def fit(self, X, y, epochs=1, batch_size=None, lr=0.01):
        """SGD over batches in order (no shuffling); returns each epoch's mean loss
        measured before each batch's update, as the engine does."""
        X = np.asarray(X, dtype=self.dtype)
        y = np.asarray(y, dtype=self.dtype).reshape(len(X), -1)
        n = len(X)
        batch_size = n if batch_size is None else min(batch_size, n)
        losses = []
        for _ in range(epochs):
            total = 0.0
            for start in range(0, n, batch_size):
                xb, yb = X[start : start + batch_size], y[start : start + batch_size]
                pred = self.forward(xb)
                total += mse_forward(pred, yb) * len(xb)
                self.backward(xb, yb, pred)
                self.step(lr)
            losses.append(total / n)
        return losses
