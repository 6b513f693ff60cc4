"""Measuring the models: ``sapiens2 benchmark`` (throughput, latency, peak memory, achieved FLOP/s against the
device's measured matrix-multiply ceiling) per backend and precision, and the device description it is read with.

- :mod:`.device`: what the device is (CPU model and vector features, GPU name and capability);
- :mod:`.flops`: counted FLOPs (``torch.utils.flop_counter``) and the measured matmul ceiling;
- :mod:`.memory`: peak memory of a block of work (CPU high-water mark, CUDA allocator peak);
- :mod:`.backends`: the table of ways to run a model (torch eager, torch.compile, ...);
- :mod:`.benchmark`: the runs, the report (JSON + Markdown) and the fastest configuration.
"""
from sapiens2.profiling.backends import BACKENDS, Backend, PreparedModel, find_backend
from sapiens2.profiling.benchmark import (BenchmarkConfig, BenchmarkReport, BenchmarkRow, fastest, recommended,
                                         run_benchmark)
from sapiens2.profiling.device import DeviceInfo, describe_device
from sapiens2.profiling.flops import count_flops, measure_matmul_ceiling

__all__ = ["BACKENDS", "Backend", "BenchmarkConfig", "BenchmarkReport", "BenchmarkRow", "DeviceInfo",
           "PreparedModel", "count_flops", "describe_device", "fastest", "find_backend", "measure_matmul_ceiling",
           "recommended", "run_benchmark"]
