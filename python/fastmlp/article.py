"""NeuralNetwork: the article's class, on fastmlp's engine.

Same constructor, attributes, methods, shapes and printing as the class in
"Master Backpropagation" (shared/seed), so its demo runs with only the import
changed. The initial weights are drawn from ``np.random`` exactly as the
article draws them, so ``np.random.seed(42)`` reproduces its run; the training
loop runs in C++.

The article's conventions, kept here: the loss it reports is
mean((ŷ − y)²), while its backward uses (ŷ − y) / m (the gradient of
(1/2m) Σ (ŷ − y)²); biases are column vectors (out, 1); the cache holds
(features, batch) arrays under 'A0', 'Z1', 'A1', ...
"""

from __future__ import annotations

import numpy as np

from . import kernels
from ._validation import check_int, check_positive_float, check_samples, check_targets
from .network import ACTIVATIONS, MAX_COUNT, Network, ParameterList
from .optimizers import SGD

__all__ = ["NeuralNetwork"]


class NeuralNetwork:
    """A fully connected network with manual backpropagation (the article's API)."""

    def __init__(self, layer_sizes, learning_rate=0.1, activation="relu"):
        self.layer_sizes = layer_sizes
        self.learning_rate = check_positive_float(learning_rate, "learning_rate")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}; got {activation!r}")
        self.activation_name = activation
        # seed=0: the engine's own generator is not used for the article's weights,
        # and drawing a seed from np.random would shift the article's stream.
        self._net = Network(layer_sizes, activation, output_activation="linear", loss="mse",
                            dtype="float64", seed=0)

        # He initialization, drawn exactly as the article draws it.
        for i in range(len(layer_sizes) - 1):
            fan_in = layer_sizes[i]
            self._net.weights[i][...] = np.random.randn(layer_sizes[i + 1], layer_sizes[i]) * np.sqrt(2.0 / fan_in)
        self.weights = self._net.weights
        self.biases = ParameterList(b.reshape(-1, 1) for b in self._net.biases)
        self.cache = {}

    @property
    def network(self) -> Network:
        """The fastmlp Network underneath (shares its parameters with this object)."""
        return self._net

    def _activation(self, z, derivative=False):
        """Apply activation function and its derivative."""
        z = np.asarray(z, dtype=np.float64)
        a = kernels.activation_forward(z, self.activation_name)
        if not derivative:
            return a
        return kernels.activation_backward(np.ones_like(a), z, a, self.activation_name)

    def forward(self, X):
        """Perform forward pass through the network; returns (batch_size, outputs)."""
        X = check_samples(X, "X", self._net.n_inputs, np.float64)  # once: forward takes it as is
        out = self._net.forward(X)
        self.cache = {"A0": X.T}
        for layer in range(len(self._net.weights)):
            z, a = self._net.layer_cache(layer)
            self.cache[f"Z{layer + 1}"] = z.T
            self.cache[f"A{layer + 1}"] = a.T
        return out

    def backward(self, X, y, y_pred):
        """Perform backward pass to compute gradients: (gradients_w, gradients_b)."""
        X = check_samples(X, "X", self._net.n_inputs, np.float64)
        y = check_targets(y, "y", X.shape[0], self._net.n_outputs, np.float64)
        y_pred = check_targets(y_pred, "y_pred", X.shape[0], self._net.n_outputs, np.float64)
        dA = (y_pred - y) * (1.0 / X.shape[0])  # the article's (ŷ − y) / m: the gradient of (1/2m) Σ (ŷ − y)²
        grads_w, grads_b = self._net.backward_output(X, dA)
        gradients_w = [g.copy() for g in grads_w]
        gradients_b = [g.reshape(-1, 1).copy() for g in grads_b]
        return gradients_w, gradients_b

    def update_parameters(self, gradients_w, gradients_b):
        """Update weights and biases using gradient descent."""
        for i in range(len(self.weights)):
            self.weights[i] -= self.learning_rate * np.asarray(gradients_w[i]).reshape(self.weights[i].shape)
            self.biases[i] -= self.learning_rate * np.asarray(gradients_b[i]).reshape(self.biases[i].shape)

    def train(self, X, y, epochs=1000, verbose=True):
        """Train the network using backpropagation; returns the loss of every epoch.

        Full batch, as the article: each epoch's loss is measured before its
        update and printed ten times over the run when verbose.
        """
        epochs = check_int(epochs, "epochs", minimum=1, maximum=MAX_COUNT)
        X = check_samples(X, "X", self._net.n_inputs, np.float64)
        y = check_targets(y, "y", X.shape[0], self._net.n_outputs, np.float64)
        # The article steps by lr · (ŷ − y)/m; Network's MSE gradient is 2(ŷ − y)/(m·outputs).
        optimizer = SGD(lr=self.learning_rate * self._net.n_outputs / 2.0)
        every = max(1, epochs // 10)
        losses = []
        chunk = every if verbose else epochs
        for start in range(0, epochs, chunk):
            history = self._net.fit(X, y, epochs=min(chunk, epochs - start), optimizer=optimizer)
            losses.extend(history.history["loss"])
            if verbose:
                print(f"Epoch {start}, Loss: {losses[start]:.6f}")
        return losses
