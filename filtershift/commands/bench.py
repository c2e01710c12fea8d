"""``filtershift bench [--filters N] [--workers W] [--repeats R] [--json] [--data DIR]``"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    from filtershift.bench.runner import ALL_VARIANTS, DEFAULT_BY

    parser = subparsers.add_parser(
        "bench",
        help="time every analysis pass (and extraction) on a synthetic database, side by side with plain numpy",
        description="Build (or reuse) a synthetic database of N conv-like filters under --data, then time the three "
        "streaming reads of `analyze` on dask (worker processes and threads) against a plain single-process numpy "
        "loop over the same Zarr chunks and the same arithmetic in RAM, the PCA also against dask-ml and "
        "scikit-learn, and extraction against plain loading. Medians of --repeats interleaved runs.",
    )
    parser.add_argument("--filters", type=int, default=20_000_000, metavar="N", help="filters in the synthetic database (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, metavar="W", help="dask workers / threads (default %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, metavar="R", help="runs of every variant; medians reported (default %(default)s)")
    parser.add_argument("--data", type=Path, default=Path("bench-data"), help="where synthetic databases and checkpoints are kept, keyed by N and seed (default ./bench-data)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic database (default 0)")
    parser.add_argument("--variants", default=",".join(ALL_VARIANTS), help="comma-separated subset of: " + ", ".join(ALL_VARIANTS))
    parser.add_argument("--by", default=",".join(DEFAULT_BY), help="groupings of the histogram pass (default %(default)s)")
    parser.add_argument("--extract-models", type=int, default=24, metavar="M", help="checkpoints for the extraction benchmark; 0 skips it (default %(default)s)")
    parser.add_argument("--out-of-core", action="store_true",
                        help="instead: run the whole `filtershift analyze` cold (page cache dropped with posix_fadvise) on the "
                        "--filters store, --repeats times; report wall time, bytes read, cores busy and peak RSS per process")
    parser.add_argument("--realistic-extraction", type=int, default=0, metavar="M",
                        help="instead: `filtershift extract` of M realistic-size checkpoints (VGG16- and ResNet-50-shaped, as torch, "
                        "safetensors, ONNX, TorchScript and fp16, generated once under --data) as a whole command with --workers "
                        "workers, against a plain single-process loop writing the same 3x3 kernels; --repeats interleaved runs")
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.set_defaults(func=execute)


def execute(args) -> int:
    from filtershift.bench.runner import BenchSettings, run_bench
    from filtershift.bench.table import format_table

    if args.filters < 1000 or args.workers < 1 or args.repeats < 1:
        print("error: --filters must be at least 1000, --workers and --repeats at least 1", file=sys.stderr)
        return 2
    if args.realistic_extraction:
        from filtershift.bench.realistic import bench_realistic

        report = bench_realistic(args.data / "extract", args.realistic_extraction, args.repeats, (args.workers,),
                                 log=lambda msg: print(msg, file=sys.stderr, flush=True))
        print(json.dumps(report, indent=1) if args.json else format_realistic(report))
        return 0
    if args.out_of_core:
        from filtershift.bench.outofcore import run_out_of_core

        report = run_out_of_core(args.filters, args.data, args.repeats, args.seed, args.workers,
                                 log=lambda msg: print(msg, file=sys.stderr, flush=True))
        print(json.dumps(report, indent=1) if args.json else format_out_of_core(report))
        return 0
    settings = BenchSettings(
        n_filters=args.filters, workers=args.workers, repeats=args.repeats, data=args.data, seed=args.seed,
        variants=tuple(v.strip() for v in args.variants.split(",") if v.strip()),
        by=tuple(b.strip() for b in args.by.split(",") if b.strip()), extract_models=args.extract_models,
    )
    try:
        report = run_bench(settings)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(report, indent=1) if args.json else format_table(report))
    return 0


def format_out_of_core(report: dict) -> str:
    m = report["median"]
    return (f"out-of-core analyze, {report['n_filters']:,} filters ({report['store_bytes'] / 1e9:.2f} GB store), "
            f"{report['workers']} workers, cold ({report['cold']}), medians of {len(report['runs'])}:\n"
            f"  wall {m['seconds']:.1f} s, read {m['read_bytes'] / 1e9:.2f} GB, {m['cores_busy']:.2f} cores busy, "
            f"peak RSS per process up to {report['max_peak_rss_mib']:.0f} MiB")


def format_realistic(report: dict) -> str:
    lines = [f"extraction of {report['n_checkpoints']} realistic checkpoints ({report['bytes'] / 1e9:.2f} GB, page cache warm), "
             "whole commands, medians:"]
    for name, v in report["variants"].items():
        lines.append(f"  {name:<20} {v['seconds']:7.1f} s  {v['ratio_vs_plain_loop']:.2f}x the loop  "
                     f"{v['cores_busy']:.2f} cores busy  peak RSS {v['peak_rss_mib']:.0f} MiB  (runs: {', '.join(f'{t:.1f}' for t in v['runs'])})")
    return "\n".join(lines)
