"""The consolidation plan: pure arithmetic, checked without running it."""

from hypothesis import given, strategies as st

from filtershift.extraction.chunkplan import plan_chunk_writes


@given(
    sizes=st.lists(st.integers(0, 40), max_size=12),
    start=st.integers(0, 100),
    chunk_rows=st.integers(1, 32),
)
def test_writes_tile_the_new_rows_one_task_per_chunk(sizes, start, chunk_rows):
    sources = [(f"s{i}", n) for i, n in enumerate(sizes)]
    writes = plan_chunk_writes(sources, start, chunk_rows)
    chunks = [w.chunk for w in writes]
    assert len(chunks) == len(set(chunks))  # no two tasks write the same chunk
    row = start
    for w in writes:
        assert w.start == row and w.start // chunk_rows == (w.stop - 1) // chunk_rows == w.chunk
        assert sum(p.src_stop - p.src_start for p in w.pieces) == w.stop - w.start
        row = w.stop
    assert row == start + sum(sizes)
    # every source row lands exactly once, in order
    landed = [(p.source, r) for w in writes for p in w.pieces for r in range(p.src_start, p.src_stop)]
    assert landed == [(name, r) for name, n in sources for r in range(n)]
    dst = [p.dst_start + k for w in writes for p in w.pieces for k in range(p.src_stop - p.src_start)]
    assert dst == list(range(start, start + sum(sizes)))
