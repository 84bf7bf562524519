"""fastmlp: dense neural networks trained by backpropagation, with multithreaded C++ kernels.

    import fastmlp as fm
    net = fm.Network([1, 64, 32, 1], activation="relu", seed=0)
    history = net.fit(X, y, epochs=5000, optimizer=fm.SGD(lr=0.01))
    net.predict(X)
"""

from . import kernels, reference
from ._core import __version__
from ._threads import get_num_threads, set_num_threads
from .article import NeuralNetwork
from .gradcheck import GradientCheckResult, gradient_check
from . import schedules
from .callbacks import EarlyStopping
from . import diagnosis, distributed
from .diagnosis import Diagnosis
from .network import ACTIVATIONS, INITS, LOSSES, History, Network
from .io import load
from .optimizers import LAMB, SGD, Adam, AdamW, Optimizer
from .schedules import Constant, Cosine, Exponential, StepDecay, Warmup

__all__ = [
    "__version__",
    "Network",
    "load",
    "NeuralNetwork",
    "History",
    "SGD",
    "Adam",
    "AdamW",
    "LAMB",
    "Optimizer",
    "Constant",
    "StepDecay",
    "Exponential",
    "Cosine",
    "Warmup",
    "schedules",
    "EarlyStopping",
    "INITS",
    "ACTIVATIONS",
    "LOSSES",
    "gradient_check",
    "GradientCheckResult",
    "Diagnosis",
    "diagnosis",
    "distributed",
    "set_num_threads",
    "get_num_threads",
    "kernels",
    "reference",
]
