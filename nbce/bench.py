"""Benchmarks: nbce against its memory roofline, its arithmetic floor, scipy/NumPy and PyTorch.

``CASES`` is the one table of what is measured; ``nbce bench`` (this module)
and the asv suite in ``asv_bench/`` both read it.

The roofline of a function is the cheapest kernel that moves the same bytes:
a streaming read (row max) of the logits for reductions, a streaming copy
(read the logits, write an array of the same size) for functions that write
a full-size result. Its arithmetic floor (``exps``) is one exp of every
element, taken as the kernels take it, on data in cache: every function
computes at least that. A kernel that overlaps its arithmetic with its memory
traffic perfectly takes the larger of the two times; one that overlaps none,
their sum. Every ratio is taken in one run, with the timings of the compared
implementations interleaved, so slow phases of a shared machine hit all of
them alike.
"""

import argparse
import json
import os
import platform
import time

import numba
import numpy as np
import scipy.special

import nbce

from . import _cpu

SHAPES = [(32, 10), (256, 1000), (65536, 1000), (4096, 32000), (1024, 128256)]
SMALL_SHAPES = SHAPES[:2]
DTYPES = ["float32", "float64"]


def _stream_copy(X, out, stream):
    """Roofline of a full-size result: read X once, write out once, stored as
    the kernels store into it (``stream``: non-temporal stores, see
    ``_cpu.streams``).

    Into an existing array, plain stores first read each line of ``out``
    from memory: at 4096 x 32000 and 1024 x 128256 float32 the copy then took
    1.3-1.4 times as long. Into a new array, they took 0.85-0.92 times as
    long as non-temporal stores.
    """
    for n in numba.prange(X.shape[0]):
        x = X[n]
        _cpu.write_row(out[n], x, 1.0, 0.0, 0.0, stream, -1, x[:0])
        _cpu.store_fence()


def _stream_read(X, out):
    """Roofline of a row reduction: read X once (row max)."""
    for n in numba.prange(X.shape[0]):
        out[n] = _cpu.row_max(X[n])


def _exp_floor(X, out):
    """Arithmetic floor: one exp of every element, summed per row as the
    kernels sum them (``out[n]``), with no memory traffic: every row takes the
    exps of the first row of ``X``, which stays in cache."""
    n_blocks, per_block = _cpu.row_blocks(X.shape[0], X.shape[1])
    for blk in numba.prange(n_blocks):
        x = X[0]
        first, stop = _cpu.block_rows(blk, per_block, X.shape[0])
        for n in range(first, stop):
            out[n] = _cpu.row_exp_sum(x, x[:0], False)[0]


stream_copy = _cpu.cached_njit(_stream_copy, parallel=True)
stream_read = _cpu.cached_njit(_stream_read, parallel=True)
# built as the kernels are (serial below PARALLEL_MIN_ELEMENTS, their vector interleave)
exp_floor = _cpu.kernel(interleave=_cpu.SUM_INTERLEAVE)(_exp_floor)


def _scipy_ce_with_grad(x, y):
    n = np.arange(x.shape[0])
    log_p = scipy.special.log_softmax(x, axis=-1)
    grad = np.exp(log_p)
    grad[n, y] -= 1
    grad /= x.shape[0]
    return -log_p[n, y].mean(), grad


def _scipy_ce(x, y):
    return -scipy.special.log_softmax(x, axis=-1)[np.arange(x.shape[0]), y]


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


class Case:
    """One public function: how nbce, the baselines and the roofline run it.

    ``make(impl, data)`` turns the data of :func:`make_data` into a
    zero-argument call of one implementation, or None where it does not exist
    (PyTorch not installed).
    """

    def __init__(self, name, roofline, nbce_call, scipy_call, torch_call):
        self.name = name
        # "read", "copy" (into a preallocated array) or "copy-new" (into a
        # newly allocated one, for functions that allocate their result)
        self.roofline = roofline
        self._calls = {"nbce": nbce_call, "scipy": scipy_call, "torch": torch_call}

    def bytes_moved(self, n, c, itemsize):
        return n * c * itemsize * (1 if self.roofline == "read" else 2)

    def make(self, impl, data):
        if impl == "exps":
            x, row_out = data["x"], np.empty(data["x"].shape[0])
            return lambda: exp_floor.build(x)(x, row_out)
        if impl == "roofline":
            x = data["x"]
            if self.roofline == "copy":
                return lambda: stream_copy(x, data["out"], _cpu.streams(x, True))
            if self.roofline == "copy-new":
                return lambda: stream_copy(x, np.empty_like(x), False)
            row_out = np.empty(x.shape[0], x.dtype)
            return lambda: stream_read(x, row_out)
        call = self._calls[impl]
        if impl == "torch":
            torch = _torch()
            if torch is None:
                return None
            return call(torch, torch.from_numpy(data["x"]), torch.from_numpy(data["y"]))
        return call(data)


def _torch_ce_fwd_bwd(torch, tx, ty):
    def run():
        x = tx.detach().requires_grad_(True)
        torch.nn.functional.cross_entropy(x, ty).backward()

    return run


CASES = {
    case.name: case
    for case in [
        Case(
            "cross_entropy_with_grad",
            "copy",
            lambda d: lambda: nbce.cross_entropy_with_grad(d["x"], d["y"], out=d["out"]),
            lambda d: lambda: _scipy_ce_with_grad(d["x"], d["y"]),
            _torch_ce_fwd_bwd,
        ),
        Case(
            "cross_entropy",
            "read",
            lambda d: lambda: nbce.cross_entropy(d["x"], d["y"], reduction="none"),
            lambda d: lambda: _scipy_ce(d["x"], d["y"]),
            lambda torch, tx, ty: lambda: torch.nn.functional.cross_entropy(tx, ty, reduction="none"),
        ),
        Case(
            "log_softmax",
            "copy-new",
            lambda d: lambda: nbce.log_softmax(d["x"]),
            lambda d: lambda: scipy.special.log_softmax(d["x"], axis=-1),
            lambda torch, tx, ty: lambda: torch.log_softmax(tx, dim=-1),
        ),
        Case(
            "softmax",
            "copy-new",
            lambda d: lambda: nbce.softmax(d["x"]),
            lambda d: lambda: scipy.special.softmax(d["x"], axis=-1),
            lambda torch, tx, ty: lambda: torch.softmax(tx, dim=-1),
        ),
        Case(
            "logsumexp",
            "read",
            lambda d: lambda: nbce.logsumexp(d["x"]),
            lambda d: lambda: scipy.special.logsumexp(d["x"], axis=-1),
            lambda torch, tx, ty: lambda: torch.logsumexp(tx, dim=-1),
        ),
    ]
}

IMPLEMENTATIONS = ["nbce", "roofline", "exps", "scipy", "torch"]


def make_data(n, c, dtype, seed=0):
    """Logits (3 x standard normal), class-index targets and a gradient buffer.

    At most 64 distinct rows are drawn and repeated: the kernels' speed does
    not depend on the values, and drawing 10**8 normals takes seconds.
    """
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((min(n, 64), c), dtype=dtype)
    block *= 3
    x = np.resize(block, (n, c))  # the block's rows, repeated
    y = rng.integers(0, c, n)
    return {"x": x, "y": y, "out": np.empty_like(x)}


def _repeats(n, c):
    """Enough rounds for a stable minimum without spending minutes on big shapes."""
    return int(min(20, max(5, 2e7 // (n * c))))


def measure(case, n, c, dtype, impls=IMPLEMENTATIONS, repeats=None, budget=20.0):
    """Best time (s) of each implementation, measured in interleaved rounds.

    Each round times every implementation in turn, so a slow phase of the
    machine hits all of them. Before a short call is timed, it runs untimed
    for a few milliseconds: the thread pool of the implementation timed just
    before (OpenMP threads spin after a parallel region) must not steal its
    cores. An implementation whose single call exceeds ``budget / 10``
    seconds is timed once.
    """
    data = make_data(n, c, dtype)
    calls = {impl: case.make(impl, data) for impl in impls}
    return time_interleaved({k: f for k, f in calls.items() if f is not None}, repeats or _repeats(n, c), budget)


def time_interleaved(calls, repeats, budget=20.0):
    """Best time (s) of each zero-argument call in ``calls``: see :func:`measure`."""
    best = {}
    for impl, f in calls.items():
        # warm-up: JIT compilation, first touch of memory. A slow first call
        # is timed once more, so that compiling does not count as its time.
        best[impl] = _timed(f)
        if best[impl] > budget / 10:
            best[impl] = _timed(f)
    slow = {impl for impl, t in best.items() if t > budget / 10}
    settle = 5e-3
    for _ in range(repeats):
        for impl, f in calls.items():
            if impl in slow:
                continue
            start = time.perf_counter()
            while best[impl] < settle and time.perf_counter() - start < settle:
                f()
            for _ in range(3 if best[impl] < settle else 1):
                best[impl] = min(best[impl], _timed(f))
    return best


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


# The options of cross_entropy_with_grad, each timed against the plain fused
# kernel on the same data, in the same interleaved rounds.
OPTIONS_SHAPE = (4096, 32000)


def option_calls(data):
    """Zero-argument calls of ``cross_entropy_with_grad``: plain, and with each option."""
    x, y, out = data["x"], data["y"], data["out"]
    n, c = x.shape
    rng = np.random.default_rng(1)
    extras = dict(return_lse=True, return_z_loss=True, return_argmax=True)
    variants = {
        "plain": {},
        "weight + label_smoothing": dict(weight=rng.uniform(0.5, 2.0, c), label_smoothing=0.1),
        "sample_weight": dict(sample_weight=rng.uniform(0.0, 2.0, n)),
        "z_loss": dict(z_loss=1e-4),
        "softcap": dict(softcap=30.0),
        "return_lse/z_loss/argmax": dict(z_loss=1e-4, **extras),
        "all of the above": dict(
            weight=rng.uniform(0.5, 2.0, c), label_smoothing=0.1, sample_weight=rng.uniform(0.0, 2.0, n),
            z_loss=1e-4, softcap=30.0, **extras,
        ),
    }  # fmt: skip
    return {
        name: (lambda kw=kw: nbce.cross_entropy_with_grad(x, y, out=out, **kw)) for name, kw in variants.items()
    }


def run_options(dtype="float32", shape=OPTIONS_SHAPE, repeats=5):
    """Records of each option's time and its ratio to the plain fused kernel."""
    n, c = shape
    best = time_interleaved(option_calls(make_data(n, c, dtype)), repeats)
    return [
        {"option": name, "dtype": dtype, "n": n, "c": c, "time": t, "vs_plain": t / best["plain"]}
        for name, t in best.items()
    ]


OPTION_COLUMNS = ["cross_entropy_with_grad option", "dtype", "shape", "time", "vs plain"]


def option_rows(records):
    return [
        [r["option"], r["dtype"], f"{r['n']}x{r['c']}", _fmt_time(r["time"]), f"{r['vs_plain']:.2f}"]
        for r in records
    ]


def run(functions=None, shapes=SHAPES, dtypes=DTYPES, repeats=None, progress=True):
    """Run every (function, dtype, shape) case; a list of result records."""
    functions = functions or list(CASES)
    jobs = [(f, d, s) for f in functions for d in dtypes for s in shapes]
    torch = _torch()
    if torch is not None:
        torch.set_num_threads(numba.get_num_threads())
    records = []
    bar = _progress(len(jobs)) if progress else None
    for fname, dtype, (n, c) in jobs:
        case = CASES[fname]
        if bar:
            bar.update(f"{fname} {dtype} {n}x{c}")
        best = measure(case, n, c, dtype, repeats=repeats)
        rec = {"function": fname, "dtype": dtype, "n": n, "c": c, "roofline": case.roofline, "times": best}
        t = best["nbce"]
        rec["gb_per_s"] = case.bytes_moved(n, c, np.dtype(dtype).itemsize) / t / 1e9
        rec["vs_roofline"] = t / best["roofline"]
        rec["vs_exps"] = t / best["exps"]
        rec["speedup_scipy"] = best["scipy"] / t
        rec["speedup_torch"] = best["torch"] / t if "torch" in best else None
        records.append(rec)
        if bar:
            bar.advance()
    if bar:
        bar.close()
    return records


class _progress:
    """A rich progress bar on stderr."""

    def __init__(self, total):
        from rich.progress import Progress

        self._p = Progress(transient=True)
        self._p.start()
        self._task = self._p.add_task("bench", total=total)

    def update(self, text):
        self._p.update(self._task, description=text)

    def advance(self):
        self._p.advance(self._task)

    def close(self):
        self._p.stop()


def machine():
    """What the figures were measured on."""
    import scipy

    info = {
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cores": os.cpu_count(),
        "numba_threads": numba.get_num_threads(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "numba": numba.__version__,
        "nbce": nbce.__version__,
    }
    torch = _torch()
    info["torch"] = torch.__version__ if torch is not None else None
    return info


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


COLUMNS = ["function", "dtype", "shape", "nbce", "GB/s", "vs roofline", "vs exps", "vs scipy", "vs torch"]


def table_rows(records):
    """The printed table: one row of strings per record."""

    def speedup(v):
        return "-" if v is None else f"{v:.1f}x"

    return [
        [
            r["function"],
            r["dtype"],
            f"{r['n']}x{r['c']}",
            _fmt_time(r["times"]["nbce"]),
            f"{r['gb_per_s']:.1f}",
            f"{r['vs_roofline']:.2f} ({r['roofline']})",
            f"{r['vs_exps']:.2f}",
            speedup(r["speedup_scipy"]),
            speedup(r["speedup_torch"]),
        ]
        for r in records
    ]


def _fmt_time(t):
    return f"{t * 1e6:.1f} us" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def print_table(rows, columns=COLUMNS, title="nbce bench (best of interleaved runs)"):
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i < 3 else "right")
    for row in rows:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # a pipe or a file: keep whole rows, do not fold at 80 columns
        console = Console(width=160)
    console.print(table)


def markdown(report):
    """docs/performance.md, from a ``nbce bench --json`` report."""
    lines = [
        "# Performance",
        "",
        "Generated by `nbce bench --markdown docs/performance.md` (from the same run as its",
        "`--json` output); do not edit by hand.",
        "",
        "## Method",
        "",
        "Cross-entropy over many classes is memory-bound: the least any implementation",
        "can do is read the logits once (forward) and, for the gradient, write one array",
        "of the same size. Each function is therefore compared with its *roofline*, a",
        "Numba `prange` kernel moving the same bytes: a streaming read (row max) for",
        "`cross_entropy(reduction='none')` and `logsumexp`; a streaming copy into a",
        "preallocated array for `cross_entropy_with_grad` (which writes the gradient",
        "into a preallocated `out=`); a streaming copy into a newly allocated array",
        "(`copy-new`) for `log_softmax` and `softmax`, which allocate their result.",
        "The copies store as nbce does: into a preallocated array of 16 MB or more,",
        "with non-temporal stores, which skip reading it from memory first; into a",
        "new array, with plain stores, which find its freshly zeroed pages in cache.",
        "All implementations of one case run interleaved, round after round, and the",
        "best time of each is kept, so ratios are taken under the same machine load;",
        "a short call first runs untimed for 5 ms, so that the spinning thread pool of",
        "the implementation before it does not slow it down.",
        "`vs roofline` is nbce's time over the roofline's (1.00 = at the memory limit).",
        "`vs exps` is nbce's time over its arithmetic floor: a kernel taking the exp of",
        "every element once, with nbce's vectorised exp, on data that stays in cache",
        "(each row exponentiates the first row). Every function computes at least",
        "that. A kernel whose arithmetic overlapped its memory traffic perfectly would",
        "take the larger of the roofline's time and the floor's; one that overlapped",
        "none, their sum.",
        "`vs scipy` and `vs torch` are speed-ups of nbce over `scipy.special` and",
        "PyTorch CPU (forward + `backward()` for `cross_entropy_with_grad`, with the",
        "same number of threads). GB/s counts the roofline's bytes.",
        "",
        "## Machine",
        "",
    ]
    lines += [f"- {k}: {v}" for k, v in report["machine"].items()]
    lines += ["", "## Results", ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "---|" * len(COLUMNS))
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(report["records"])]
    if report.get("plot"):
        lines += ["", f"![throughput against number of classes]({report['plot']})"]
    if report.get("options"):
        lines += [
            "",
            "## Options",
            "",
            "`cross_entropy_with_grad` with each option, against the plain fused kernel",
            "(`vs plain`: time over the plain call's, measured in the same interleaved rounds).",
            "",
            "| " + " | ".join(OPTION_COLUMNS) + " |",
            "|" + "---|" * len(OPTION_COLUMNS),
        ]
        lines += ["| " + " | ".join(row) + " |" for row in option_rows(report["options"])]
    return "\n".join(lines) + "\n"


def plot(records, path):
    """Throughput (GB/s of the roofline's bytes) against the number of classes.

    Only shapes of at least 2**24 elements are drawn: below that the data
    sits in cache and call overhead, not memory, sets the pace.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    large = [r for r in records if r["n"] * r["c"] >= 1 << 24]
    dtypes = sorted({r["dtype"] for r in large})
    fig, axes = plt.subplots(1, max(len(dtypes), 1), figsize=(6 * max(len(dtypes), 1), 4.5), squeeze=False)
    for ax, dtype in zip(axes[0], dtypes):
        recs = [r for r in large if r["dtype"] == dtype]
        for fname in CASES:
            own = sorted((r for r in recs if r["function"] == fname), key=lambda r: r["c"])
            if own:
                ax.plot([r["c"] for r in own], [r["gb_per_s"] for r in own], marker="o", label=fname)
        itemsize = np.dtype(dtype).itemsize
        for roof, style in (("copy", ":"), ("copy-new", "-."), ("read", "--")):
            by_c = {}
            for r in recs:
                if r["roofline"] == roof:
                    gbs = CASES[r["function"]].bytes_moved(r["n"], r["c"], itemsize) / r["times"]["roofline"] / 1e9
                    by_c.setdefault(r["c"], []).append(gbs)
            if by_c:
                cs = sorted(by_c)
                ax.plot(cs, [np.mean(by_c[c]) for c in cs], "k" + style, label=f"streaming {roof}")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("number of classes C (N x C >= 2^24)")
        ax.set_ylabel("GB/s")
        ax.set_title(f"nbce, {dtype}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="nbce bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--functions", nargs="+", choices=list(CASES), help="functions to measure (default: all)")
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=DTYPES)
    parser.add_argument("--quick", action="store_true", help=f"only the small shapes {SMALL_SHAPES}")
    parser.add_argument("--shapes", nargs="+", metavar="NxC", help="shapes such as 4096x32000")
    parser.add_argument("--repeat", type=int, help="interleaved rounds per case (default: by size)")
    parser.add_argument("--json", metavar="FILE", help="write the records and machine info as JSON")
    parser.add_argument("--plot", metavar="FILE.png", help="plot throughput against number of classes")
    parser.add_argument("--markdown", metavar="FILE.md", help="write the performance page")
    parser.add_argument(
        "--device", choices=["cpu", "cuda"], default="cpu", help="cuda: the fused kernel's GB/s on the GPU"
    )
    parser.add_argument(
        "--options",
        action="store_true",
        help=f"also time cross_entropy_with_grad's options against the plain call ({OPTIONS_SHAPE[0]}x{OPTIONS_SHAPE[1]})",
    )
    args = parser.parse_args(argv)

    shapes = SMALL_SHAPES if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(v) for v in s.lower().split("x")) for s in args.shapes]
    if args.device == "cuda":
        from . import bench_gpu

        return bench_gpu.main(shapes if args.shapes or args.quick else None, args.dtypes, args.repeat or 10)
    records = run(args.functions, shapes, args.dtypes, repeats=args.repeat)
    print_table(table_rows(records))
    report = {"machine": machine(), "records": records}
    if args.options:
        report["options"] = run_options(repeats=args.repeat or 5)
        print_table(option_rows(report["options"]), OPTION_COLUMNS, "cross_entropy_with_grad options")
    if args.plot:
        plot(records, args.plot)
        report["plot"] = os.path.basename(args.plot)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
