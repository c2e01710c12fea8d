"""Who writes which chunk: pure arithmetic, checked without running it."""

from hypothesis import given, strategies as st

from filtershift.extraction.chunkplan import edge_pieces, plan_edge_writes, split_rows


@given(
    sizes=st.lists(st.integers(0, 40), max_size=12),
    start=st.integers(0, 100),
    chunk_rows=st.integers(1, 32),
)
def test_every_new_row_is_written_once_and_every_chunk_by_one_task(sizes, start, chunk_rows):
    """Checkpoints laid end to end from row ``start``: each writes its whole chunks, the shared
    chunks are written from the edges, one task per chunk; every row lands once, in order."""
    writers: dict[int, set] = {}  # chunk -> the tasks writing it
    landed = []  # (store row, source, row of the source)
    pieces, row = [], start
    for i, n in enumerate(sizes):
        head, tail = split_rows(row, row + n, chunk_rows)
        assert row <= head <= tail <= row + n
        assert head % chunk_rows == 0 or head == row + n
        assert (tail - head) % chunk_rows == 0
        for chunk in range(head // chunk_rows, tail // chunk_rows):
            writers.setdefault(chunk, set()).add(f"write-{i}")
        landed += [(r, f"s{i}", r - row) for r in range(head, tail)]
        for piece in edge_pieces(f"s{i}", row, row + n, chunk_rows):
            assert piece.n > 0
            offset = 0 if piece.which == "head" else tail - row
            landed += [(piece.dst_start + k, f"s{i}", offset + k) for k in range(piece.n)]
        pieces += edge_pieces(f"s{i}", row, row + n, chunk_rows)
        row += n
    for w in plan_edge_writes(pieces, chunk_rows):
        assert w.start // chunk_rows == (w.stop - 1) // chunk_rows == w.chunk
        assert sum(p.n for p in w.pieces) == w.stop - w.start
        writers.setdefault(w.chunk, set()).add(f"consolidate-{w.chunk}")
    assert all(len(tasks) == 1 for tasks in writers.values())  # no two tasks write one chunk
    landed.sort()
    assert [r for r, _, _ in landed] == list(range(start, row))
    assert [(s, k) for _, s, k in landed] == [(f"s{i}", k) for i, n in enumerate(sizes) for k in range(n)]
