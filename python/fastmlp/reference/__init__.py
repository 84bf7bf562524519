"""NumPy twins of fastmlp's kernels and of the whole network: the oracle.

Every function here has the name and signature of its fast twin in
:mod:`fastmlp.kernels`, and :class:`Network` mirrors the C++ engine on the same
flat parameter layout (W_0, b_0, W_1, b_1, ...). Written for clarity, not
speed; the tests hold the C++ to these.

One module per C++ source, so that a kernel's twin is found by the kernel's file name:

=====================  ==============================================================
module                 twin of
=====================  ==============================================================
``gemm``               cpp/src/gemm/ (gemm.cpp): :func:`gemm`
``activation``         cpp/src/activation.cpp: activations, their derivatives, the fused
                       bias passes (a bias add alone is the linear one)
``layers``             cpp/src/layers.cpp: layer norm, batch norm, dropout (its mask drawn
                       as the engine draws it; the CUDA backend's hashed mask too), the
                       residual add
``loss``               cpp/src/loss.cpp: losses, their gradients, softmax, count_correct
``optimizer``          cpp/src/optimizer.cpp: grad_norm, clip_scale, the update rules,
                       :class:`Optimizer`
``schedule``           the schedules that cpp/src/optimizer.cpp also holds: schedule_factor
``random``             cpp/include/fastmlp/random.hpp: :class:`Rng`
``network``            cpp/src/network.cpp: :class:`Network` (its fit shuffles as the
                       engine's), :class:`LayerNetwork` (the layer list: norms,
                       dropout, residual blocks), init_params, resolve_init
``article``            no C++: the article's own class, verbatim, the twin of
                       fastmlp.NeuralNetwork (python/fastmlp/article.py)
=====================  ==============================================================

The name lists (:data:`ACTIVATIONS`, :data:`LOSSES`, :data:`OPTIMIZERS`,
:data:`SCHEDULE_KINDS`, :data:`INIT_SCHEMES`) are the reference's own copies of the
engine's tables, kept on purpose; tests/test_names.py holds them equal.
"""

from __future__ import annotations

from .activation import (
    ACTIVATIONS,
    LEAKY_RELU_SLOPE,
    activation_backward,
    activation_bias_backward,
    activation_forward,
    bias_activation_forward,
    bias_add_backward,
    bias_add_forward,
)
from .article import NeuralNetwork
from .gemm import gemm
from .layers import (
    batch_norm,
    batch_norm_backward,
    dropout,
    dropout_backward,
    dropout_keep_threshold,
    dropout_mask,
    dropout_mask_hashed,
    layer_norm,
    layer_norm_backward,
    residual_add,
)
from .loss import LOSSES, count_correct, loss_backward, loss_forward, mse_backward, mse_forward, softmax
from .network import INIT_SCHEMES, LAYER_TYPES, LayerNetwork, Network, init_params, resolve_init
from .optimizer import (OPTIMIZERS, Optimizer, adam_step, clip_scale, grad_norm, lamb_step, sgd_step, sgd_update,
                        sum_into_each)
from .random import Rng
from .schedule import SCHEDULE_KINDS, schedule_factor

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
    "LAYER_TYPES",
    "LayerNetwork",
    "Network",
    "NeuralNetwork",
    "ACTIVATIONS",
    "LEAKY_RELU_SLOPE",
    "LOSSES",
    "INIT_SCHEMES",
    "OPTIMIZERS",
    "SCHEDULE_KINDS",
    "count_correct",
    "softmax",
    "loss_forward",
    "loss_backward",
    "grad_norm",
    "sum_into_each",
    "clip_scale",
    "sgd_step",
    "adam_step",
    "lamb_step",
    "schedule_factor",
    "Rng",
    "init_params",
    "resolve_init",
    "Optimizer",
    "layer_norm",
    "layer_norm_backward",
    "batch_norm",
    "batch_norm_backward",
    "dropout_keep_threshold",
    "dropout_mask",
    "dropout_mask_hashed",
    "dropout",
    "dropout_backward",
    "residual_add",
]
