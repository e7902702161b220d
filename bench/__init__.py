"""Benchmark of the CNN Circuits Lab kit: ``python -m bench`` (see bench/README.md).

Measures, on the machine it runs on and in one run, the arithmetic bound
(a large float32 matmul), the batched scan of the probe set, re-ranking from
the cache, the gradient ascents, and ``render.sh`` end to end; every
comparison is a ratio of two numbers taken in the same run.
"""
