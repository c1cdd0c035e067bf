"""Routing of device arrays to the GPU backend, without importing it.

A public function runs its NumPy (CPU) body unless its first argument lives
on a GPU (:func:`on_device`); then :func:`run_on_gpu` calls the function of
the same name in :mod:`nbce._cuda`. That module, and with it ``numba.cuda``,
is imported on the first device call only, so ``import nbce`` works without
numba-cuda, a CUDA driver or a GPU.
"""

import inspect

import numpy as np


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


def on_device(x):
    """Whether a public function's first argument ``x`` sends the call to the GPU
    backend. NumPy arrays are ruled out first: it costs 40 ns on every call."""
    return type(x) is not np.ndarray and is_device_array(x)


def run_on_gpu(cpu_function, arguments):
    """The twin of the public ``cpu_function`` in :mod:`nbce._cuda`, called with
    ``arguments`` (the public function's ``locals()``: every parameter by name).

    Parameters the GPU function lacks (options added to the CPU path first)
    must hold their default value; otherwise ``NotImplementedError``.
    """
    name = cpu_function.__name__
    gpu_function = getattr(_backend(), name)
    gpu_parameters = inspect.signature(gpu_function).parameters
    for key, parameter in inspect.signature(cpu_function).parameters.items():
        if key not in gpu_parameters and not _is_default(arguments[key], parameter.default):
            raise NotImplementedError(f"nbce.{name}: {key}= is not supported on the GPU yet")
    return gpu_function(**{key: value for key, value in arguments.items() if key in gpu_parameters})
