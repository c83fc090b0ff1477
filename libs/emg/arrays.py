"""Signal-sized array helpers that stay within a bounded amount of extra memory.

numpy's boolean selection (``x[flags]``, ``np.compress``) first turns the condition into
int64 indices: 8 bytes per selected sample, more than the float32 samples it selects. On a
long recording that temporary is the largest allocation of the analysis, so selections here
run in blocks of ``BLOCK`` samples (same values, same order)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

BLOCK = 1 << 20


def select(flags: NDArray[np.bool_], x: NDArray[Any], scratch: NDArray[Any] | None) -> NDArray[Any]:
    """``x[flags]``, written into ``scratch`` (reinterpreted as ``x``'s dtype: a float64
    scratch holds twice as many float32 samples) when given, in blocks."""
    if scratch is None:
        return x[flags]
    buf = scratch if scratch.dtype == x.dtype else scratch.view(x.dtype)
    k = 0
    for i in range(0, x.size, BLOCK):
        f = flags[i : i + BLOCK]
        c = int(np.count_nonzero(f))
        if c:
            np.compress(f, x[i : i + BLOCK], out=buf[k : k + c])
            k += c
    return buf[:k]


def sum_squares(x: NDArray[Any]) -> float:
    """Sum of x*x accumulated in float64 (einsum buffers a float32 input in small chunks; no
    BLAS: np.dot wakes OpenBLAS threads that spin a second core for the same wall time)."""
    if x.dtype == np.float64:
        return float(np.einsum("i,i->", x, x))
    return float(np.einsum("i,i->", x, x, dtype=np.float64))


def mean_abs(x: NDArray[Any], scratch: NDArray[np.float64] | None = None) -> float:
    """mean(|x|). float64: through ``scratch`` (>= x.size; x may be its start, it is then
    overwritten) when given; other dtypes: block by block, accumulated in float64."""
    if x.dtype == np.float64:
        if scratch is None:
            return float(np.mean(np.abs(x)))
        return float(np.mean(np.abs(x, out=scratch[: x.size])))
    total = 0.0
    for i in range(0, x.size, BLOCK):
        total += float(np.abs(x[i : i + BLOCK]).sum(dtype=np.float64))
    return total / x.size
