"""Gradients written into an ``out=`` of STREAM_MIN_BYTES and more are stored
with non-temporal stores of whole cache lines, while the next input row is
prefetched (and float32 rows their own further on: PREFETCH_AHEAD_BYTES).
Lowering the threshold sends small arrays down that path: rows of C = 1103
classes start at every offset from a cache line and are longer than the
prefetch distance, and the targets fall at both ends of a row. Checked
against the path that stores normally and float64 references.
"""

import numpy as np
import pytest
from conftest import DTYPES, assert_close, make_logits

import nbce
from nbce import _cpu, reference

N, C = 40, 1103
assert C * 4 > _cpu.PREFETCH_AHEAD_BYTES


@pytest.fixture
def streamed_and_stored(monkeypatch):
    """``f()`` computed with every output streamed, then with none."""

    def run(f):
        monkeypatch.setattr(_cpu, "STREAM_MIN_BYTES", 0)
        streamed = f()
        monkeypatch.setattr(_cpu, "STREAM_MIN_BYTES", 1 << 62)
        return streamed, f()

    return run


def problem(rng, dtype):
    x = make_logits(rng, (N, C), dtype)
    y = rng.integers(0, C, N)
    y[:4] = [0, 1, C - 2, C - 1]  # the target's cache line is stored normally
    return x, y


def assert_same(streamed, stored, dtype):
    np.testing.assert_allclose(streamed, stored, rtol=4 * np.finfo(dtype).eps, atol=0)


def test_streams_only_into_memory_the_caller_gave(monkeypatch):
    monkeypatch.setattr(_cpu, "STREAM_MIN_BYTES", 0)
    out = np.empty((N, C))
    assert _cpu.streams(out, True)
    assert not _cpu.streams(out, False)  # a new array: see _cpu.streams


OPTIONS = {
    "plain": {},
    "smoothing": dict(label_smoothing=0.1),
    "softcap": dict(softcap=5.0),
    "weighted-smoothing": dict(label_smoothing=0.1, weight=np.linspace(0.5, 2.0, C)),
    "z-loss": dict(z_loss=1e-3),
}


@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_with_grad(rng, streamed_and_stored, dtype, options):
    x, y = problem(rng, dtype)
    kw = dict(reduction="sum", **options)
    (loss, grad), (loss_stored, grad_stored) = streamed_and_stored(
        lambda: nbce.cross_entropy_with_grad(x, y, out=np.empty_like(x), **kw)
    )
    assert loss == loss_stored
    assert_same(grad, grad_stored, dtype)
    assert_close(grad, reference.cross_entropy_grad(x, y, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_with_grad_in_place(rng, monkeypatch, dtype):
    x, y = problem(rng, dtype)
    monkeypatch.setattr(_cpu, "STREAM_MIN_BYTES", 0)
    work = x.copy()
    loss, grad = nbce.cross_entropy_with_grad(work, y, out=work)
    assert grad is work
    assert_close(grad, reference.cross_entropy_grad(x, y), dtype)
    assert_close(loss, reference.cross_entropy(x, y), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_focal_loss_with_grad(rng, streamed_and_stored, dtype):
    x, y = problem(rng, dtype)
    (loss, grad), (loss_stored, grad_stored) = streamed_and_stored(
        lambda: nbce.softmax_focal_loss_with_grad(x, y, gamma=2.0, reduction="sum", out=np.empty_like(x))
    )
    assert loss == loss_stored
    assert_same(grad, grad_stored, dtype)
    assert_close(grad, reference.softmax_focal_loss_grad(x, y, gamma=2.0, reduction="sum"), dtype)
