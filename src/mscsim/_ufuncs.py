"""exp, log, log1p and expm1 whose last bit does not depend on where NumPy's allocator put the arrays.

Why by hand: NumPy 1.x chooses between its SIMD loop (AVX512F) and the scalar libm loop for these functions
partly by whether the output buffer lies within 64 bytes of the input one (``IS_OUTPUT_BLOCKABLE_UNARY``), and the
two loops can differ in the last bit. For small arrays, such as the draws for a chunk of a few patients, that
distance depends on the heap's history, so the same patient could get different bits in different processes (seen
as a Dask worker's trial differing from the local run in the 16th digit). Evaluating in place on a fresh contiguous
copy (distance 0) always takes the same loop, so per-patient draws are bit-reproducible on a given machine.
"""

from __future__ import annotations

import numpy as np


def _in_place(ufunc, x) -> np.ndarray:
    a = np.array(x, dtype=np.float64, order="C", copy=True)
    ufunc(a, out=a)
    return a


def exp(x) -> np.ndarray:
    return _in_place(np.exp, x)


def log(x) -> np.ndarray:
    return _in_place(np.log, x)


def log1p(x) -> np.ndarray:
    return _in_place(np.log1p, x)


def expm1(x) -> np.ndarray:
    return _in_place(np.expm1, x)
