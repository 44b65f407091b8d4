"""An immutable sequence of floats over a read-only numpy vector: a traffic window's long series held compactly.

The live metrics source keeps every workload's day of history (and its per-step signals) in one numpy array per
signal (``metrics/matrix.py``). Handing each window its series as a tuple of Python floats costs 32 bytes a point
(the float and its slot): at 10,000 workloads the day of history alone (288 points) was ~92 MB, built again whenever
the history moved. A ``FloatSeries`` is a view of the array's row instead (~100 bytes whatever its length): the
points stay where the source keeps them.

It behaves as the tuple did for every reader: ``len``, indexing (a Python ``float``), slicing (a ``FloatSeries``),
iteration, ``np.asarray`` (no copy; the dtype the source keeps, e.g. float32, widened exactly by ``dtype=float64``)
and equality with any sequence of the same floats, a tuple included; it hashes as the tuple of its floats. So the
policy's arithmetic, which converts a series with ``np.asarray(..., dtype=np.float64)`` first, sees the same float64
values either way and decides identically.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np
import numpy.typing as npt

__all__ = ["FloatSeries"]


class FloatSeries(Sequence[float]):
    __slots__ = ("_values",)

    def __init__(self, values: npt.ArrayLike) -> None:
        array = values if type(values) is np.ndarray else np.asarray(values)
        if array.ndim != 1:
            raise ValueError(f"a series is one-dimensional, not of shape {array.shape}")
        if array.dtype.kind != "f":
            array = array.astype(np.float64)
        if array.flags.writeable:
            array = array.view()
            array.flags.writeable = False  # the view only: nobody changes the series through it
        self._values: npt.NDArray[np.floating[Any]] = array

    def __len__(self) -> int:
        return int(self._values.shape[0])

    @overload
    def __getitem__(self, index: int) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> FloatSeries: ...

    def __getitem__(self, index: int | slice) -> float | FloatSeries:
        if isinstance(index, slice):
            return FloatSeries(self._values[index])
        return float(self._values[index])

    def __iter__(self) -> Iterator[float]:
        return iter(self.tolist())

    def tolist(self) -> list[float]:
        values: list[float] = self._values.tolist()
        return values

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> npt.NDArray[Any]:
        if copy:
            return np.array(self._values, dtype=dtype, copy=True)
        return np.asarray(self._values, dtype=dtype)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FloatSeries):
            return len(self) == len(other) and self.tolist() == other.tolist()
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(self) == len(other) and self.tolist() == list(other)
        return NotImplemented

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    def __hash__(self) -> int:
        return hash(tuple(self.tolist()))

    def __repr__(self) -> str:
        return f"FloatSeries({self.tolist()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FloatSeries, (np.array(self._values),))

    @property
    def nbytes(self) -> int:
        """The bytes of the points this series shows (held by the array it views)."""
        return int(self._values.nbytes)
