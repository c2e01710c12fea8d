"""``filtershift bench``: the report's structure (a tiny run in the default test run; a small full one,
with extraction, and the memory-flatness check under the opt-in ``bench`` marker), and the fused
histogram kernel's two counting paths against numpy on one block. No wall-clock assertions."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from filtershift.analysis import passes as P
from filtershift.analysis.histograms import bin_edges
from filtershift.bench.synthetic import conv_like, realistic_tables

STREAM = ("dask_processes", "dask_processes_chunks", "dask_threads", "dask_threads_chunks", "numpy_loop", "numpy_memory")


def run_bench(tmp_path, *args: str) -> dict:
    """The command in a fresh process (a LocalCluster changes the environment of its parent)."""
    out = subprocess.run(
        [sys.executable, "-m", "filtershift", "bench", "--json", "--data", str(tmp_path), *args],
        check=True, capture_output=True, text=True, timeout=900,
    )
    return json.loads(out.stdout)


def ratios(obj, path="") -> list[tuple[str, float]]:
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k.startswith("ratio"):
                found.append((f"{path}.{k}", v))
            else:
                found += ratios(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += ratios(v, f"{path}[{i}]")
    return found


def check_report(report: dict, variants: tuple[str, ...], n_filters: int) -> None:
    assert report["format"] == "filtershift-bench/1"
    assert report["database"]["n_filters"] == n_filters
    assert report["database"]["n_models"] > 1 and report["database"]["n_layers"] > report["database"]["n_models"]
    assert list(report["passes"]) == ["moments", "range", "histograms"]
    for name, p in report["passes"].items():
        expected = set(variants) - {"dask_ml_incremental", "sklearn_pca"} if name != "moments" else set(variants)
        assert set(p["variants"]) == expected, name
        for v, r in p["variants"].items():
            for key in ("seconds", "cpu_seconds", "filters_per_s", "bytes_per_s", "peak_rss_mib"):
                assert isinstance(r[key], float) and math.isfinite(r[key]) and r[key] >= 0, (name, v, key)
            assert r["seconds"] > 0 and r["peak_rss_mib"] > 0
            assert len(r["runs"]) == report["settings"]["repeats"]
            assert r["ratio_vs_numpy_loop"] > 0
    assert set(report["analysis_total"]) == set(variants) & set(STREAM)
    found = ratios(report)
    assert found, "no ratios in the report"
    for where, value in found:
        assert isinstance(value, float) and math.isfinite(value) and value > 0, where


def test_tiny_bench_json(tmp_path):
    variants = ("dask_processes", "dask_processes_chunks", "dask_threads", "numpy_loop", "numpy_memory", "sklearn_pca")
    report = run_bench(tmp_path, "--filters", "40000", "--repeats", "1", "--workers", "1", "--extract-models", "0",
                       "--variants", ",".join(variants))
    check_report(report, variants, 40_000)
    assert report["extraction"] is None and "extraction" in report["skipped"]
    # Reused, keyed by N and seed: a second run does not rebuild.
    again = run_bench(tmp_path, "--filters", "40000", "--repeats", "1", "--workers", "1", "--extract-models", "0", "--variants", "numpy_loop")
    assert again["database"]["build_seconds"] == 0.0


def _block_context(n_rows: int, n_bins_2d: int):
    models, layers = realistic_tables(n_rows, seed=3)
    starts = layers["start"].to_numpy()
    rows = np.arange(n_rows)
    x = conv_like(rows, layers, 3)
    lid = (np.searchsorted(starts, rows, side="right") - 1).astype(np.int32)
    n_layers = len(layers)
    lookup = np.arange(n_layers)
    m = P.moments_block(x, lid, P.FitContext(np.ones(n_layers, bool), "scaled"))[0]
    from filtershift.analysis.pca import pca_from_moments

    pca = pca_from_moments(m, "scaled")
    cmin, cmax, la = P.range_block(x, lid, P.RangeContext(lookup, "scaled", pca.mean, pca.components))[0]
    dense = la.dense(n_layers)
    table = layers.merge(models, on="model_id")
    groupings = [np.zeros(n_layers, np.int64)] + [table[c].astype("category").cat.codes.to_numpy().astype(np.int64) for c in ("task", "depth_decile")]
    ctx = P.HistogramContext(
        lookup, "scaled", pca.mean, pca.components, bin_edges(cmin.min(), cmax.max(), 70),
        np.stack([bin_edges(cmin[k], cmax[k], n_bins_2d) for k in range(9)]), np.array([(0, 1), (1, 2), (4, 7)]),
        tuple(groupings), tuple(int(g.max()) + 1 for g in groupings), dense["max_abs"], dense["sums"] / np.maximum(dense["n"], 1)[:, None],
    )
    return x, lid, ctx, pca


@pytest.mark.parametrize("n_bins_2d", [4, 64])  # 4: counted per layer-group combination; 64: per grouping
def test_histogram_block_against_numpy(monkeypatch, n_bins_2d):
    x, lid, ctx, pca = _block_context(30_000, n_bins_2d)
    layers, hist2d = P.histogram_block(x, lid, ctx)[0]
    w = x.astype(np.float64)
    m = np.abs(w).max(axis=1)
    c = (w / np.where(m > 0, m, 1.0)[:, None] - pca.mean) @ pca.components.T
    pos = ctx.layer_lookup[lid]
    for layer in (0, int(pos.max()) // 2, int(pos.max())):
        rows = pos == layer
        for k in (0, 5):
            expected = np.histogram(np.clip(c[rows, k], ctx.edges[0], ctx.edges[-1]), bins=ctx.edges)[0]
            assert (layers.arrays["counts"][layer - layers.lo, k] == expected).all()
    for g, (codes, n_groups) in enumerate(zip(ctx.group_codes_2d, ctx.n_groups_2d)):
        assert hist2d[g].shape == (n_groups, 3, n_bins_2d, n_bins_2d)
        group_of_row = codes[pos]
        for grp in range(n_groups):
            rows = group_of_row == grp
            for p, (i, j) in enumerate(ctx.pairs):
                a = np.clip(c[rows, i], ctx.edges_2d[i, 0], ctx.edges_2d[i, -1])
                b = np.clip(c[rows, j], ctx.edges_2d[j, 0], ctx.edges_2d[j, -1])
                expected = np.histogram2d(a, b, bins=[ctx.edges_2d[i], ctx.edges_2d[j]])[0]
                assert (hist2d[g][grp, p] == expected).all(), (g, grp, p)
    # The sub-block size changes nothing but float rounding of the sums.
    monkeypatch.setattr(P, "SUB_ROWS", 1000)
    layers_small, hist2d_small = P.histogram_block(x, lid, ctx)[0]
    assert (layers_small.arrays["counts"] == layers.arrays["counts"]).all()
    assert all((a == b).all() for a, b in zip(hist2d_small, hist2d))
    for name in ("range_sum", "scatter"):
        np.testing.assert_allclose(layers_small.arrays[name], layers.arrays[name], rtol=1e-12, atol=1e-12)


@pytest.mark.bench
def test_bench_small_full(tmp_path):
    report = run_bench(tmp_path, "--filters", "2000000", "--repeats", "3", "--extract-models", "4")
    check_report(report, STREAM + ("dask_ml_incremental", "sklearn_pca"), 2_000_000)
    ex = report["extraction"]
    assert ex["n_checkpoints"] == 4 and set(ex["variants"]) == {"plain_loop", "extract_1_workers", "extract_2_workers"}
    for r in ex["variants"].values():
        assert r["checkpoints_per_s"] > 0 and math.isfinite(r["ratio_vs_plain_loop"]) and r["ratio_vs_plain_loop"] > 0


@pytest.mark.bench
def test_peak_worker_memory_flat_in_n(tmp_path):
    """Peak worker RSS of the three reads at 10x the filters within 1.2x of the smaller run. The smaller
    run has 16 chunks, so workers are past their warm-up (at 1M, 4 chunks, they were not: 377 MiB vs
    489 MiB at 10M, while 20M -> 200M measured 507 -> 569 MiB)."""
    peaks = {}
    for n in (4_000_000, 40_000_000):
        report = run_bench(tmp_path, "--filters", str(n), "--repeats", "1", "--extract-models", "0", "--variants", "dask_processes,dask_processes_chunks,numpy_loop")
        peaks[n] = max(p["variants"][v]["peak_rss_mib"] for p in report["passes"].values() for v in ("dask_processes", "dask_processes_chunks"))
    assert peaks[40_000_000] <= 1.2 * peaks[4_000_000], peaks


def test_chunk_source_passes_equal_dask_array_passes(tmp_path):
    """Reading the chunks inside the tasks gives the same results as the two dask arrays: counts,
    minima and maxima exactly, float sums to 1e-12 (a read task merges its chunks before the tree
    merges the tasks, so the sums are added in another order)."""
    import dask

    from filtershift.analysis.plan import make_plan
    from filtershift.bench import streaming as S
    from filtershift.bench.synthetic import ensure_database
    from filtershift.store import write_database

    db, _ = ensure_database(tmp_path, 30_000, log=None)
    small = write_database(tmp_path / "small", db.filters().compute(), db.models, db.layers, chunk_rows=4096)
    plan = make_plan(small.models, small.layers, small.chunk_rows, by=["task", "depth_decile"])
    with dask.config.set(scheduler="sync"):
        inputs = S.prepare_inputs(small, plan)
        for name in S.PASSES:
            a, b = S.dask_pass(name, small, inputs, chunks=False), S.dask_pass(name, small, inputs, chunks=True)
            if name == "moments":
                assert a.n == b.n
                np.testing.assert_allclose(a.m2, b.m2, rtol=1e-12)
            elif name == "range":
                assert np.array_equal(a.cmin, b.cmin) and np.array_equal(a.cmax, b.cmax)
                np.testing.assert_allclose(a.sums, b.sums, rtol=1e-12, atol=1e-12)
            else:
                assert np.array_equal(a.counts, b.counts)
                np.testing.assert_allclose(a.scatter, b.scatter, rtol=1e-12, atol=1e-12)
                assert all(np.array_equal(x, y) for x, y in zip(a.hist2d, b.hist2d))


def test_out_of_core_report(tmp_path):
    """`bench --out-of-core` on a tiny store: a cold whole-command analysis, with its figures."""
    report = run_bench(tmp_path, "--out-of-core", "--filters", "20000", "--repeats", "1")
    assert report["n_filters"] == 20000 and report["store_bytes"] >= 20000 * 36
    (run,) = report["runs"]
    assert run["dropped_bytes"] >= 20000 * 36
    assert run["seconds"] > 0 and run["cpu_seconds"] > 0 and run["read_bytes"] >= 0
    assert len(run["peak_rss_mib_per_process"]) >= 3  # the command and its two workers
    assert any(line.startswith("wrote ") for line in run["log"])  # the analysis finished and wrote its results


@pytest.mark.bench
def test_realistic_extraction_report(tmp_path):
    """`bench --realistic-extraction` on two checkpoints (one VGG16-, one ResNet-50-shaped): the loop
    and the whole command both write every 3x3 kernel, and the report gives their ratio."""
    report = run_bench(tmp_path, "--realistic-extraction", "2", "--repeats", "1", "--workers", "2")
    assert report["n_checkpoints"] == 2 and report["bytes"] > 100e6
    assert set(report["variants"]) == {"plain_loop", "extract_2_workers"}
    assert report["variants"]["plain_loop"]["ratio_vs_plain_loop"] == 1.0
    assert (tmp_path / "extract" / "loop.f32").stat().st_size == (1_634_496 + 1_257_472) * 36  # VGG16 + ResNet-50 3x3 kernels


def test_read_bytes_of_reaped_children_are_counted_once():
    """Linux adds a reaped child's I/O to its parent's counters: a worker's bytes reach its nanny,
    then the command's, and must be counted once whichever sample saw them last."""
    from filtershift.bench.outofcore import _own_read_bytes

    worker_gone_first = {1: {"read_bytes": 215, "ppid": 0, "at": 6.0}, 2: {"read_bytes": 210, "ppid": 1, "at": 5.0},
                         3: {"read_bytes": 200, "ppid": 2, "at": 4.0}}
    nanny_sampled_first = {1: {"read_bytes": 215, "ppid": 0, "at": 6.0}, 2: {"read_bytes": 10, "ppid": 1, "at": 4.0},
                           3: {"read_bytes": 200, "ppid": 2, "at": 4.5}}
    all_alive = {1: {"read_bytes": 5, "ppid": 0, "at": 6.0}, 2: {"read_bytes": 10, "ppid": 1, "at": 6.0},
                 3: {"read_bytes": 200, "ppid": 2, "at": 6.0}}
    for seen in (worker_gone_first, nanny_sampled_first, all_alive):
        assert _own_read_bytes(seen) == {1: 5, 2: 10, 3: 200}
