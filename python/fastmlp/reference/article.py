"""The article's NumPy NeuralNetwork class, verbatim: the twin of fastmlp.NeuralNetwork
(python/fastmlp/article.py), exported as fastmlp.reference.NeuralNetwork (tests hold
fastmlp's class to it, and benchmarks/bench_train.py times it as a peer).

Copied unchanged from "Master Backpropagation: The Hidden Engine of AI and Machine
Learning" (Amir58, 2025; shared/seed/backpropagation-article.txt), Part 3. Only the
class is taken: the article's `import matplotlib.pyplot as plt` and its demo are
left out (the class does not use them); `fastmlp demo` is that demo. It prints only
when train(..., verbose=True) asks it to.
"""

import numpy as np


class NeuralNetwork:
    """
    A fully connected neural network with manual backpropagation implementation.
    """
    def __init__(self, layer_sizes, learning_rate=0.1, activation='relu'):
        self.layer_sizes = layer_sizes
        self.learning_rate = learning_rate
        self.activation_name = activation
        
        # Initialize weights and biases using He initialization (good for ReLU)
        self.weights = []
        self.biases = []
        
        for i in range(len(layer_sizes) - 1):
            # He initialization: sqrt(2 / fan_in)
            fan_in = layer_sizes[i]
            weight_matrix = np.random.randn(layer_sizes[i+1], layer_sizes[i]) * np.sqrt(2. / fan_in)
            bias_vector = np.zeros((layer_sizes[i+1], 1))
            
            self.weights.append(weight_matrix)
            self.biases.append(bias_vector)
        
        # Cache for storing forward pass values for backpropagation
        self.cache = {}

    def _activation(self, z, derivative=False):
        """Apply activation function and its derivative."""
        if self.activation_name == 'relu':
            if derivative:
                return np.where(z > 0, 1.0, 0.0)
            return np.maximum(0, z)
        elif self.activation_name == 'sigmoid':
            s = 1 / (1 + np.exp(-z))
            if derivative:
                return s * (1 - s)
            return s
        elif self.activation_name == 'tanh':
            t = np.tanh(z)
            if derivative:
                return 1 - t**2
            return t
        elif self.activation_name == 'swish':  # 2025 Modern default
            s = 1 / (1 + np.exp(-z))
            if derivative:
                return s + z * s * (1 - s)
            return z * s

    def forward(self, X):
        """Perform forward pass through the network."""
        # Input layer
        A = X.T  # Transpose to (features, batch_size)
        self.cache['A0'] = A
        
        # Hidden layers
        for i in range(len(self.weights) - 1):
            Z = self.weights[i] @ A + self.biases[i]
            A = self._activation(Z)
            self.cache[f'Z{i+1}'] = Z
            self.cache[f'A{i+1}'] = A
        
        # Output layer (linear activation for regression, softmax for classification would go here)
        Z_out = self.weights[-1] @ A + self.biases[-1]
        A_out = Z_out  # Linear activation
        self.cache[f'Z{len(self.weights)}'] = Z_out
        self.cache[f'A{len(self.weights)}'] = A_out
        
        return A_out.T  # Transpose back to (batch_size, features)

    def backward(self, X, y, y_pred):
        """Perform backward pass to compute gradients."""
        m = X.shape[0]  # batch size
        gradients_w = [np.zeros_like(w) for w in self.weights]
        gradients_b = [np.zeros_like(b) for b in self.biases]
        
        # Calculate initial error (derivative of MSE loss)
        dA = (y_pred - y).T / m  # (output_size, batch_size)
        
        # Backpropagate through layers in reverse
        for l in range(len(self.weights)-1, -1, -1):
            if l == len(self.weights) - 1:
                # Output layer (linear activation)
                dZ = dA  # For linear activation, derivative is 1
                A_prev = self.cache[f'A{l}']
            else:
                # Hidden layers
                Z_curr = self.cache[f'Z{l+1}']
                dZ = dA * self._activation(Z_curr, derivative=True)
                A_prev = self.cache[f'A{l}']
            
            # Compute gradients for weights and biases at this layer
            gradients_w[l] = dZ @ A_prev.T
            gradients_b[l] = np.sum(dZ, axis=1, keepdims=True)
            
            # Compute gradient for next layer (if not at input)
            if l > 0:
                dA = self.weights[l].T @ dZ
        
        return gradients_w, gradients_b

    def update_parameters(self, gradients_w, gradients_b):
        """Update weights and biases using gradient descent."""
        for i in range(len(self.weights)):
            self.weights[i] -= self.learning_rate * gradients_w[i]
            self.biases[i] -= self.learning_rate * gradients_b[i]

    def train(self, X, y, epochs=1000, verbose=True):
        """Train the network using backpropagation."""
        losses = []
        
        for epoch in range(epochs):
            # Forward pass
            y_pred = self.forward(X)
            
            # Compute loss (Mean Squared Error)
            loss = np.mean((y_pred - y) ** 2)
            losses.append(loss)
            
            # Backward pass
            gradients_w, gradients_b = self.backward(X, y, y_pred)
            
            # Update parameters
            self.update_parameters(gradients_w, gradients_b)
            
            if verbose and epoch % (epochs // 10) == 0:
                print(f"Epoch {epoch}, Loss: {loss:.6f}")
        
        return losses
