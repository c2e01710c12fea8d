"""Plan of a consolidation: which staged rows each store chunk receives. Pure arithmetic.

New rows ``[start, start + n)`` are the staged models laid end to end. Each write task owns one
store chunk (or the tail of the partly filled last chunk), reads its pieces straight from the
staging files and writes once: no task writes another's chunk, and no rows travel between
workers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    """Rows ``[src_start, src_stop)`` of one staged source go to store rows from ``dst_start``."""

    source: str
    src_start: int
    src_stop: int
    dst_start: int


@dataclass(frozen=True)
class ChunkWrite:
    """One task: store rows ``[start, stop)``, all inside chunk ``chunk``, from ``pieces``."""

    chunk: int
    start: int
    stop: int
    pieces: tuple[Piece, ...]


def plan_chunk_writes(sources: list[tuple[str, int]], start: int, chunk_rows: int) -> tuple[ChunkWrite, ...]:
    """Split sources ``[(name, n_rows), ...]`` appended at row ``start`` into per-chunk writes."""
    writes: list[ChunkWrite] = []
    bounds, offset = [], start
    for name, n in sources:
        bounds.append((name, offset, offset + n))
        offset += n
    stop = offset
    row = start
    k = 0
    while row < stop:
        chunk = row // chunk_rows
        end = min(stop, (chunk + 1) * chunk_rows)
        pieces = []
        while k < len(bounds) and bounds[k][1] < end:
            name, a, b = bounds[k]
            lo, hi = max(a, row), min(b, end)
            if hi > lo:
                pieces.append(Piece(name, lo - a, hi - a, lo))
            if b <= end:
                k += 1
            else:
                break
        writes.append(ChunkWrite(chunk=chunk, start=row, stop=end, pieces=tuple(pieces)))
        row = end
    return tuple(writes)
