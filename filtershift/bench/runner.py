"""``filtershift bench``: build (or reuse) a synthetic database, then time every stage side by side.

Every repeat runs every variant of every pass once, interleaved (so that load from other work on
the machine hits them alike); the report holds each run and the medians. Ratios are speed-ups:
``ratio_vs_numpy_loop = seconds(numpy loop) / seconds(variant)`` (> 1: faster than the loop).
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from filtershift.bench import streaming as S

STREAM_VARIANTS = ("dask_processes", "dask_processes_chunks", "dask_threads", "dask_threads_chunks", "numpy_loop", "numpy_memory")
PCA_VARIANTS = ("dask_ml_incremental", "sklearn_pca")
ALL_VARIANTS = STREAM_VARIANTS + PCA_VARIANTS
DEFAULT_BY = ("task", "data_type", "family", "depth_decile", "model")
FORMAT = "filtershift-bench/1"


@dataclass(frozen=True)
class BenchSettings:
    n_filters: int = 20_000_000
    workers: int = 2
    repeats: int = 3
    data: Path = Path("bench-data")
    seed: int = 0
    variants: tuple[str, ...] = ALL_VARIANTS
    by: tuple[str, ...] = DEFAULT_BY
    extract_models: int = 24
    extract_workers: tuple[int, ...] = (1, 2)


@dataclass
class _Runs:
    seconds: dict = field(default_factory=dict)  # (pass, variant) -> [s]
    peaks: dict = field(default_factory=dict)  # (pass, variant) -> [[bytes per process]]
    cpu: dict = field(default_factory=dict)  # (pass, variant) -> [CPU s]

    def add(self, key, seconds, peaks, cpu) -> None:
        self.seconds.setdefault(key, []).append(seconds)
        self.peaks.setdefault(key, []).append(list(peaks))
        self.cpu.setdefault(key, []).append(cpu)


def run_bench(settings: BenchSettings, log=None) -> dict:
    """Run the benchmark; return the report (JSON-ready dict)."""
    import dask
    from threadpoolctl import threadpool_limits

    from filtershift.analysis.plan import make_plan
    from filtershift.bench.synthetic import ensure_database

    say = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    unknown = set(settings.variants) - set(ALL_VARIANTS)
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(ALL_VARIANTS)}")
    db, build_seconds = ensure_database(settings.data, settings.n_filters, settings.seed, log=say)
    plan = make_plan(db.models, db.layers, db.chunk_rows, by=list(settings.by))
    say(plan.describe())
    inputs = S.prepare_inputs(db, plan)
    variants = [v for v in ALL_VARIANTS if v in settings.variants]
    skipped: dict[str, str] = {}
    for v in ("numpy_memory", "sklearn_pca"):
        if v in variants:
            ok, why = S.memory_fits(db.n_rows, v)
            if not ok:
                variants.remove(v)
                skipped[v] = why
    runs = _Runs()
    load_seconds: list[float] = []
    self_pid = [__import__("os").getpid()]
    W = settings.workers
    threads_cfg = dict(scheduler="threads", num_workers=W)

    use_cluster = "dask_processes" in variants or "dask_processes_chunks" in variants
    with _maybe_cluster(use_cluster, W) as (client, worker_pids):
        # Warm-up on one chunk: workers import the analysis code, the first page faults are paid.
        warm = S.Inputs(_one_block_plan(plan), inputs.pca, inputs.hist_ctx)
        for name in S.PASSES:
            for chunks in (False, True):
                if client is not None:
                    S.dask_pass(name, db, warm, chunks)
                with dask.config.set(**threads_cfg), threadpool_limits(1):
                    S.dask_pass(name, db, warm, chunks)
        for r in range(settings.repeats):
            say(f"repeat {r + 1}/{settings.repeats}")
            for name in S.PASSES:
                for v, chunks in (("dask_processes", False), ("dask_processes_chunks", True)):
                    if v in variants:
                        t, pk, c, _ = S.timed(lambda: S.dask_pass(name, db, inputs, chunks), worker_pids, worker_pids + self_pid)
                        runs.add((name, v), t, pk, c)
                for v, chunks in (("dask_threads", False), ("dask_threads_chunks", True)):
                    if v in variants:
                        with dask.config.set(**threads_cfg), threadpool_limits(1):
                            t, pk, c, _ = S.timed(lambda: S.dask_pass(name, db, inputs, chunks), self_pid)
                        runs.add((name, v), t, pk, c)
                if "numpy_loop" in variants:
                    with threadpool_limits(1):
                        t, pk, c, _ = S.timed(lambda: S.numpy_loop_pass(name, db, inputs), self_pid)
                    runs.add((name, "numpy_loop"), t, pk, c)
                say("  " + name + ": " + ", ".join(f"{v} {runs.seconds[(name, v)][-1]:.2f} s" for v in STREAM_VARIANTS[:5] if len(runs.seconds.get((name, v), [])) == r + 1))
            if "dask_ml_incremental" in variants:
                with dask.config.set(**threads_cfg):
                    t, pk, c, _ = S.timed(lambda: S.dask_ml_pca(db, inputs), self_pid)
                runs.add(("moments", "dask_ml_incremental"), t, pk, c)
            if "numpy_memory" in variants or "sklearn_pca" in variants:
                t0 = time.perf_counter()
                filters, lids = S.load_in_memory(db)
                load_seconds.append(time.perf_counter() - t0)
                if "numpy_memory" in variants:
                    with threadpool_limits(1):
                        for name in S.PASSES:
                            t, pk, c, _ = S.timed(lambda: S.numpy_memory_pass(name, filters, lids, db.chunk_rows, inputs), self_pid)
                            runs.add((name, "numpy_memory"), t, pk, c)
                if "sklearn_pca" in variants:
                    t, pk, c, _ = S.timed(lambda: S.sklearn_pca(filters, lids, inputs), self_pid)
                    runs.add(("moments", "sklearn_pca"), t, pk, c)
                del filters, lids
            say("  in RAM / PCA: " + ", ".join(f"{p} {v} {runs.seconds[(p, v)][-1]:.2f} s" for p in S.PASSES for v in ("numpy_memory",) + PCA_VARIANTS
                                                if len(runs.seconds.get((p, v), [])) == r + 1))

    report = _report(settings, db, plan, variants, skipped, runs, load_seconds, build_seconds)
    if settings.extract_models > 0:
        from filtershift.bench.extraction import bench_extraction

        say(f"extraction: {settings.extract_models} checkpoints, workers {settings.extract_workers}")
        report["extraction"] = bench_extraction(Path(settings.data) / "extract", settings.extract_models, settings.repeats, settings.extract_workers)
    else:
        report["extraction"] = None
        report["skipped"]["extraction"] = "--extract-models 0"
    return report


def _one_block_plan(plan):
    from dataclasses import replace

    return replace(plan, blocks=plan.blocks[:1], fit_blocks=plan.fit_blocks[:1])


class _maybe_cluster:
    def __init__(self, wanted: bool, workers: int) -> None:
        self._cm = S.local_cluster(workers) if wanted else None

    def __enter__(self):
        return self._cm.__enter__() if self._cm else (None, [])

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc) if self._cm else False


def _report(settings, db, plan, variants, skipped, runs: _Runs, load_seconds, build_seconds) -> dict:
    from filtershift.analysis.passes import SUB_ROWS

    n_rows = {"moments": plan.n_fit, "range": plan.n_analysed, "histograms": plan.n_analysed}
    n_read = {"moments": len(plan.fit_blocks), "range": len(plan.blocks), "histograms": len(plan.blocks)}
    passes = {}
    for name in S.PASSES:
        out = {}
        for v in variants:
            key = (name, v)
            if key not in runs.seconds:
                continue
            secs = runs.seconds[key]
            t = statistics.median(secs)
            peak_runs = [max(p) for p in runs.peaks[key]]
            rows_read = min(n_read[name] * db.chunk_rows, db.n_rows)
            out[v] = {
                "seconds": t, "runs": secs,
                "filters_per_s": n_rows[name] / t,
                "cpu_seconds": statistics.median(runs.cpu[key]),
                "filters_per_cpu_s": n_rows[name] / statistics.median(runs.cpu[key]) if statistics.median(runs.cpu[key]) > 0 else None,
                "bytes_per_s": rows_read * S.BYTES_PER_ROW / t,
                "peak_rss_mib": statistics.median(peak_runs) / S.MiB,
                "peak_rss_mib_runs": [p / S.MiB for p in peak_runs],
                "rss_scope": "per worker process (max over workers)" if v.startswith("dask_processes") else "this process",
            }
        _ratios(out)
        passes[name] = {"title": S.PASS_TITLES[name], "n_filters": n_rows[name], "chunks_read": n_read[name], "variants": out}
    total = {}
    for v in STREAM_VARIANTS:
        if all(v in passes[p]["variants"] for p in S.PASSES):
            per_run = [sum(x) for x in zip(*(runs.seconds[(p, v)] for p in S.PASSES))]
            cpu = statistics.median([sum(x) for x in zip(*(runs.cpu[(p, v)] for p in S.PASSES))])
            t = statistics.median(per_run)
            total[v] = {"seconds": t, "runs": per_run, "filters_per_s": plan.n_analysed / t, "cpu_seconds": cpu,
                        "peak_rss_mib": max(passes[p]["variants"][v]["peak_rss_mib"] for p in S.PASSES)}
    _ratios(total)
    return {
        "format": FORMAT,
        "settings": {k: (str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "database": {
            "path": str(db.path), "n_filters": int(db.n_rows), "n_layers": len(db.layers), "n_models": len(db.models),
            "bytes": int(db.n_rows * S.BYTES_PER_ROW), "chunk_rows": int(db.chunk_rows), "build_seconds": build_seconds,
            "groupings": [g.name for g in plan.groupings], "groupings_2d": [g.name for g in plan.groupings_2d],
        },
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "sub_rows": SUB_ROWS},
        "load_in_memory_seconds": statistics.median(load_seconds) if load_seconds else None,
        "passes": passes,
        "analysis_total": total,
        "skipped": skipped,
    }


def _ratios(variants: dict) -> None:
    """Speed-ups against the numpy loop and the in-memory numpy run, where those were measured."""
    for base, key in (("numpy_loop", "ratio_vs_numpy_loop"), ("numpy_memory", "ratio_vs_numpy_memory")):
        if base not in variants:
            continue
        t0 = variants[base]["seconds"]
        for v in variants.values():
            v[key] = t0 / v["seconds"]
