"""Which task writes which store chunk. Pure arithmetic.

A checkpoint placed at rows ``[start, stop)`` owns the store chunks that lie wholly inside them and
writes them itself; its first and last rows may share a chunk with the rows before and after it
(its *edges*). Each such shared chunk is written once, by one consolidation task, from the edges of
every checkpoint it holds: no two tasks write one chunk, and no rows travel between workers.
"""

from __future__ import annotations

from dataclasses import dataclass


def split_rows(start: int, stop: int, chunk_rows: int) -> tuple[int, int]:
    """``(head, tail)`` with ``start <= head <= tail <= stop``: rows ``[head, tail)`` fill whole
    chunks, ``[start, head)`` and ``[tail, stop)`` each lie inside one chunk."""
    head = min(stop, -(-start // chunk_rows) * chunk_rows)
    tail = max(head, stop // chunk_rows * chunk_rows)
    return head, tail


@dataclass(frozen=True)
class Piece:
    """``n`` edge rows of a checkpoint (its staging ``source`` folder, ``which`` edge) at store row ``dst_start``."""

    source: str
    which: str  # head | tail
    dst_start: int
    n: int


@dataclass(frozen=True)
class ChunkWrite:
    """One task: store rows ``[start, stop)``, all inside chunk ``chunk``, from ``pieces``."""

    chunk: int
    start: int
    stop: int
    pieces: tuple[Piece, ...]


def edge_pieces(source: str, start: int, stop: int, chunk_rows: int) -> list[Piece]:
    """The edges of a checkpoint written at rows ``[start, stop)`` (empty ones left out)."""
    head, tail = split_rows(start, stop, chunk_rows)
    pieces = [Piece(source, "head", start, head - start), Piece(source, "tail", tail, stop - tail)]
    return [p for p in pieces if p.n]


def plan_edge_writes(pieces: list[Piece], chunk_rows: int) -> tuple[ChunkWrite, ...]:
    """Group edge pieces (of checkpoints laid end to end) into one write per shared chunk."""
    by_chunk: dict[int, list[Piece]] = {}
    for piece in sorted(pieces, key=lambda p: p.dst_start):
        chunk = piece.dst_start // chunk_rows
        if (piece.dst_start + piece.n - 1) // chunk_rows != chunk:
            raise ValueError(f"an edge piece at row {piece.dst_start} crosses a chunk boundary")
        by_chunk.setdefault(chunk, []).append(piece)
    writes = []
    for chunk, group in sorted(by_chunk.items()):
        for before, after in zip(group, group[1:]):
            if before.dst_start + before.n != after.dst_start:
                raise ValueError(f"the edge rows of chunk {chunk} leave a gap at row {before.dst_start + before.n}")
        writes.append(ChunkWrite(chunk, group[0].dst_start, group[-1].dst_start + group[-1].n, tuple(group)))
    return tuple(writes)
