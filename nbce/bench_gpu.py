"""GPU benchmark: ``nbce bench --device cuda`` and the asv suite's GPU cases.

The fused forward+backward (``cross_entropy_with_grad`` into a preallocated
``out=``) reads the logits once and writes the gradient once: its achieved
bandwidth, counted as those bytes, is compared with the device's peak memory
bandwidth (memory clock x bus width, from the driver) and with a streaming
device-to-device copy of the same array. The target is 80% of the peak at
4096 x 128256 float32.

Needs a CUDA GPU: numba-cuda's simulator runs kernels as Python threads, so
timing it would mean nothing.
"""

import os
import sys

import numpy as np

import nbce

from .bench import make_data

try:
    import numba_cuda  # noqa: F401  (numba-cuda, not numba's deprecated built-in target)
except ImportError:
    cuda = None
else:
    from numba import cuda  # a module global: the simulator swaps it inside kernels

SHAPES = [(4096, 32000), (4096, 128256)]
TARGET_FRACTION = 0.8


def gpu_unavailable():
    """Why the GPU benchmark cannot run here, or None when it can."""
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        return "the CUDA simulator is on (NUMBA_ENABLE_CUDASIM): there is no GPU to time"
    if cuda is None:
        return "numba-cuda is not installed (pip install 'nbce[cuda]')"
    if not cuda.is_available():
        return "no CUDA GPU or driver found"
    return None


def peak_bandwidth():
    """The device's theoretical memory bandwidth in GB/s, or None if the driver does not tell."""
    device = cuda.get_current_device()
    try:
        clock_khz, bus_bits = device.MEMORY_CLOCK_RATE, device.GLOBAL_MEMORY_BUS_WIDTH
    except Exception:  # attribute missing in this driver's API
        return None
    return 2 * clock_khz * 1e3 * bus_bits / 8 / 1e9  # double data rate


def _copy_kernel():
    @cuda.jit
    def copy(src, dst):
        for k in range(cuda.grid(1), src.size, cuda.gridsize(1)):
            dst[k] = src[k]

    return copy


def make_calls(n, c, dtype):
    """Zero-argument calls of the fused kernel and of the copy roofline, on device data."""
    data = make_data(n, c, dtype)
    x = cuda.to_device(data["x"])
    y = cuda.to_device(data["y"])
    out = cuda.device_array_like(x)
    flat_x, flat_out = x.reshape(x.size), out.reshape(out.size)
    copy = _copy_kernel()
    threads = 256
    blocks = min(-(-x.size // threads), 65535)
    return {
        "nbce": lambda: nbce.cross_entropy_with_grad(x, y, out=out),
        "copy": lambda: copy[blocks, threads](flat_x, flat_out),
    }


def time_call(call, repeats):
    """Best time (s) of ``call`` over ``repeats`` runs, timed with CUDA events after a warm-up."""
    call()  # compilation and first touch
    cuda.synchronize()
    best = float("inf")
    for _ in range(repeats):
        start, stop = cuda.event(), cuda.event()
        start.record()
        call()
        stop.record()
        stop.synchronize()
        best = min(best, start.elapsed_time(stop) / 1e3)  # ms
    return best


def run(shapes=SHAPES, dtypes=("float32",), repeats=10):
    peak = peak_bandwidth()
    records = []
    for dtype in dtypes:
        for n, c in shapes:
            times = {name: time_call(call, repeats) for name, call in make_calls(n, c, dtype).items()}
            moved = 2 * n * c * np.dtype(dtype).itemsize  # read the logits, write the gradient
            gbs = moved / times["nbce"] / 1e9
            records.append(
                {
                    "dtype": dtype,
                    "n": n,
                    "c": c,
                    "times": times,
                    "gb_per_s": gbs,
                    "copy_gb_per_s": moved / times["copy"] / 1e9,
                    "peak_gb_per_s": peak,
                    "fraction_of_peak": gbs / peak if peak else None,
                }
            )
    return records


def main(shapes=None, dtypes=("float32",), repeats=10):
    """``nbce bench --device cuda``: a table of the fused kernel's bandwidth; 1 without a GPU."""
    reason = gpu_unavailable()
    if reason:
        print(f"nbce bench --device cuda: {reason}", file=sys.stderr)
        return 1
    print(f"device: {cuda.get_current_device().name}")
    print("cross_entropy_with_grad (fused forward+backward, out=), bytes = read logits + write gradient")
    print(f"{'dtype':8} {'shape':>14} {'time':>10} {'GB/s':>8} {'copy GB/s':>10} {'of peak':>8}")
    for r in run(shapes or SHAPES, dtypes, repeats):
        of_peak = "-" if r["fraction_of_peak"] is None else f"{r['fraction_of_peak']:.0%}"
        shape = f"{r['n']}x{r['c']}"
        print(
            f"{r['dtype']:8} {shape:>14} {r['times']['nbce'] * 1e3:8.2f}ms "
            f"{r['gb_per_s']:8.1f} {r['copy_gb_per_s']:10.1f} {of_peak:>8}"
        )
    peak = peak_bandwidth()
    print(f"peak memory bandwidth: {'unknown' if peak is None else f'{peak:.0f} GB/s'}; target {TARGET_FRACTION:.0%}")
    return 0
