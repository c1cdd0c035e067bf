"""asv benchmarks over the table of cases that ``nbce bench`` also runs.

Every public function is timed (``time_``) and its peak memory measured
(``peakmem_``) for nbce, the scipy/NumPy baseline, PyTorch (when importable),
the streaming roofline and the arithmetic floor (``exps``), over dtype x
shape; and the options of ``cross_entropy_with_grad`` are timed beside its
plain call.
"""

from nbce.bench import CASES, DTYPES, IMPLEMENTATIONS, OPTIONS_SHAPE, SHAPES, make_data, option_calls

PARAMS = [DTYPES, [f"{n}x{c}" for n, c in SHAPES], IMPLEMENTATIONS]
PARAM_NAMES = ["dtype", "shape", "implementation"]


class _Function:
    function = None  # a key of CASES
    params = PARAMS
    param_names = PARAM_NAMES
    timeout = 600

    def setup(self, dtype, shape, implementation):
        n, c = (int(v) for v in shape.split("x"))
        self.call = CASES[self.function].make(implementation, make_data(n, c, dtype))
        if self.call is None:
            raise NotImplementedError(f"{implementation} is not importable")  # asv skips the case
        self.call()  # JIT compilation and first touch of memory happen here, not in the timing

    def time_call(self, dtype, shape, implementation):
        self.call()

    def peakmem_call(self, dtype, shape, implementation):
        self.call()


class CrossEntropyWithGrad(_Function):
    function = "cross_entropy_with_grad"


class CrossEntropy(_Function):
    function = "cross_entropy"


class LogSoftmax(_Function):
    function = "log_softmax"


class Softmax(_Function):
    function = "softmax"


class LogSumExp(_Function):
    function = "logsumexp"


class CrossEntropyOptions:
    """``cross_entropy_with_grad`` with each option, beside the plain call (float32)."""

    params = [list(option_calls(make_data(2, 3, "float32")))]
    param_names = ["option"]
    timeout = 600

    def setup_cache(self):
        return make_data(*OPTIONS_SHAPE, "float32")

    def setup(self, data, option):
        self.call = option_calls(data)[option]
        self.call()

    def time_call(self, data, option):
        self.call()
