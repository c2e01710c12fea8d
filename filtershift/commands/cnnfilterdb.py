"""``filtershift import-cnnfilterdb FILE.h5 --db DB`` and ``filtershift export-cnnfilterdb DB FILE.h5``"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from filtershift import store
from filtershift.runtime.cluster import add_cluster_arguments, connect, settings_from_args


def register(subparsers) -> None:
    imp = subparsers.add_parser(
        "import-cnnfilterdb",
        help="import a CNN-Filter-DB HDF5 file (Gavrikov & Keuper) into a new filter database",
        description="Stream /filters of a CNN-Filter-DB file (dataset.h5) into DB/filters.zarr as float32 and map "
        "/meta to DB/models.parquet and DB/layers.parquet. The file is checked completely before anything is "
        "written; an interrupted import continues where it stopped, a finished one is not redone.",
    )
    imp.add_argument("file", type=Path, help="the CNN-Filter-DB HDF5 file")
    imp.add_argument("--db", type=Path, required=True, help="new database folder")
    imp.add_argument("--chunk-rows", type=int, default=store.DEFAULT_CHUNK_ROWS, help="rows per Zarr chunk (default %(default)s)")
    imp.add_argument("--coerce-mixed", action="store_true", help="store /meta columns that mix text and numbers as text instead of failing")
    imp.add_argument("--threads", action="store_true", help="run on the local threaded scheduler (no cluster, no dashboard); "
                     "about 3x faster than a 2-worker LocalCluster on a 2-core machine (benchmarks/bench_import.py)")
    add_cluster_arguments(imp)
    imp.set_defaults(func=execute_import)

    exp = subparsers.add_parser(
        "export-cnnfilterdb",
        help="write a filter database as a CNN-Filter-DB HDF5 file",
        description="Write DB as /filters (N, 3, 3) and /meta (pandas.DataFrame.to_hdf, index [model_id, "
        "conv_depth, conv_depth_norm, layer_id], filter_ids 'start:end' inclusive), readable by h5py and "
        "pandas.read_hdf like the published data set. filtershift's own columns travel as 'filtershift:*' "
        "columns so that importing the file restores DB exactly.",
    )
    exp.add_argument("db", type=Path, help="database folder")
    exp.add_argument("file", type=Path, help="HDF5 file to write (replaced if it exists)")
    exp.add_argument("--float64", action="store_true", help="write /filters as float64 like the published v1.0 file (default float32)")
    exp.add_argument("--threads", action="store_true", help="run on the local threaded scheduler (no cluster, no dashboard)")
    add_cluster_arguments(exp)
    exp.set_defaults(func=execute_export)


def _progress(label: str, quiet: bool):
    if quiet:
        return None
    t0 = time.perf_counter()

    def show(done: int, total: int) -> None:
        rate = done / max(time.perf_counter() - t0, 1e-9)
        print(f"{label}: {done:,}/{total:,} filters ({rate:,.0f}/s)", file=sys.stderr, flush=True)

    return show


def _scope(args):
    import dask

    return dask.config.set(scheduler="threads") if args.threads else connect(settings_from_args(args))


def execute_import(args) -> int:
    from filtershift.cnnfilterdb import import_file, read_source
    from filtershift.cnnfilterdb.hdf5 import plan_from_source

    t0 = time.perf_counter()
    source = read_source(args.file)
    tables = plan_from_source(source, args.coerce_mixed)  # validate before a cluster starts
    for note in tables.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{args.file}: {source.n_rows:,} filters ({source.dtype}), {len(tables.layers):,} layers, "
          f"{len(tables.models):,} models, /meta as {source.meta_layout}", file=sys.stderr)
    with _scope(args):
        result = import_file(args.file, args.db, chunk_rows=args.chunk_rows, coerce_mixed=args.coerce_mixed,
                             progress=_progress("import", args.no_progress), source=source)
    if result.skipped:
        print(f"{args.db} already holds this import of {args.file}; nothing to do")
        return 0
    resumed = f", resumed at row {result.resumed_from:,}" if result.resumed_from else ""
    print(f"imported {result.n_rows:,} filters, {result.n_layers:,} layers, {result.n_models:,} models into {args.db} "
          f"in {time.perf_counter() - t0:.1f} s{resumed}")
    return 0


def execute_export(args) -> int:
    from filtershift.cnnfilterdb import export_file

    t0 = time.perf_counter()
    store.open_database(args.db)
    with _scope(args):
        path = export_file(args.db, args.file, float64=args.float64, progress=_progress("export", args.no_progress))
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")
    return 0
