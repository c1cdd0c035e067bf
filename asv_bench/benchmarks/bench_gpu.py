"""asv benchmarks of the GPU backend: the fused forward+backward on the device.

Skipped (``NotImplementedError`` in ``setup``) without a CUDA GPU. Every
timed call ends with a device synchronisation, so the time covers the kernels
and not just their launch.
"""


class CrossEntropyWithGradCuda:
    params = [["float32", "float64"], ["4096x32000", "4096x128256"]]
    param_names = ["dtype", "shape"]
    timeout = 600

    def setup(self, dtype, shape):
        from nbce import bench_gpu

        reason = bench_gpu.gpu_unavailable()
        if reason:
            raise NotImplementedError(reason)  # asv skips the case
        n, c = (int(v) for v in shape.split("x"))
        self.cuda = bench_gpu.cuda
        self.call = bench_gpu.make_calls(n, c, dtype)["nbce"]
        self.call()  # compilation and first touch happen here, not in the timing
        self.cuda.synchronize()
        self.bytes_moved = 2 * n * c * (4 if dtype == "float32" else 8)
        self.peak = bench_gpu.peak_bandwidth()

    def time_fused(self, dtype, shape):
        self.call()
        self.cuda.synchronize()

    def track_gb_per_s(self, dtype, shape):
        """Achieved bandwidth: bytes of the logits read and the gradient written, per second."""
        from nbce import bench_gpu

        return self.bytes_moved / bench_gpu.time_call(self.call, repeats=10) / 1e9

    track_gb_per_s.unit = "GB/s"

    def track_fraction_of_peak_bandwidth(self, dtype, shape):
        """Achieved over peak bandwidth (target 0.8 at 4096x128256 float32); NaN if the driver
        does not report the memory clock and bus width."""
        if self.peak is None:
            return float("nan")
        return self.track_gb_per_s(dtype, shape) / self.peak

    track_fraction_of_peak_bandwidth.unit = "fraction"
