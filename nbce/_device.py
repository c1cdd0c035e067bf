"""Routing of device arrays to the GPU backend, without importing it.

A public function decorated with :func:`device_dispatch` runs its NumPy (CPU)
body unless its first argument lives on a GPU; then it calls the function of
the same name in :mod:`nbce._cuda`. That module, and with it ``numba.cuda``,
is imported on the first device call only, so ``import nbce`` works without
numba-cuda, a CUDA driver or a GPU.
"""

import functools
import inspect


def is_device_array(x):
    """Whether ``x`` lives on a GPU: CuPy, PyTorch CUDA tensors, Numba device arrays.

    A tensor that requires grad raises on ``__cuda_array_interface__``, so
    tensors are asked directly. The CUDA simulator's arrays lack the interface
    (they wrap host memory), so Numba's own array types are recognised by module.
    """
    module = type(x).__module__
    if module.startswith("torch"):
        return x.is_cuda
    return hasattr(x, "__cuda_array_interface__") or module.startswith("numba.cuda.")


def library_of(x):
    """``"cupy"``, ``"torch"`` or ``"numba"``: whose array type ``x`` is."""
    top = type(x).__module__.partition(".")[0]
    return top if top in ("cupy", "torch") else "numba"


def _backend():
    from . import _cuda

    _cuda.require_gpu()
    return _cuda


def _is_default(value, default):
    # `==` only on plain scalars: an array option compared with its default
    # (None) must not broadcast.
    return value is default or (type(value) in (bool, int, float, str) and value == default)


def device_dispatch(cpu_function):
    """Send calls whose first argument is a device array to the GPU backend.

    Keywords of the CPU function that the GPU function lacks (options added
    to the CPU path first) are accepted at their default value and raise
    ``NotImplementedError`` otherwise.
    """
    name = cpu_function.__name__

    @functools.wraps(cpu_function)
    def dispatch(x, *args, **kwargs):
        if not is_device_array(x):
            return cpu_function(x, *args, **kwargs)
        gpu_function = getattr(_backend(), name)
        cpu_parameters = inspect.signature(cpu_function).bind(x, *args, **kwargs).signature.parameters
        gpu_parameters = inspect.signature(gpu_function).parameters
        for key in [k for k in kwargs if k not in gpu_parameters]:
            if not _is_default(kwargs.pop(key), cpu_parameters[key].default):
                raise NotImplementedError(f"nbce.{name}: {key}= is not supported on the GPU yet")
        return gpu_function(x, *args, **kwargs)

    return dispatch
