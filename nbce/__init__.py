"""nbce: Numba-accelerated, numerically stable cross-entropy for NumPy arrays.

The row-wise kernels compile on first use (and are cached on disk), so
``import nbce`` itself compiles nothing.
"""

from .binary import binary_cross_entropy_with_logits, binary_cross_entropy_with_logits_with_grad
from .focal import (
    sigmoid_focal_loss,
    sigmoid_focal_loss_with_grad,
    softmax_focal_loss,
    softmax_focal_loss_with_grad,
)
from .losses import cross_entropy, cross_entropy_with_grad, nll_loss
from .probability import binary_cross_entropy, binary_cross_entropy_with_grad, log_loss, log_loss_with_grad
from .softmax import log_softmax, logsumexp, softmax

__version__ = "0.1.0"

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_grad",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_with_grad",
    "cross_entropy",
    "cross_entropy_with_grad",
    "log_loss",
    "log_loss_with_grad",
    "log_softmax",
    "logsumexp",
    "nll_loss",
    "sigmoid_focal_loss",
    "sigmoid_focal_loss_with_grad",
    "softmax",
    "softmax_focal_loss",
    "softmax_focal_loss_with_grad",
]
