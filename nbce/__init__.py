"""nbce: Numba-accelerated, numerically stable cross-entropy for NumPy arrays.

The row-wise kernels compile on first use (and are cached on disk), so
``import nbce`` itself compiles nothing.
"""

from .losses import cross_entropy, cross_entropy_with_grad, nll_loss
from .softmax import log_softmax, logsumexp, softmax

__version__ = "0.1.0"

__all__ = [
    "cross_entropy",
    "cross_entropy_with_grad",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "softmax",
]
