"""The bench report as a plain-text table (the JSON report is the source; this only formats it)."""

from __future__ import annotations

LABELS = {
    "dask_processes": "dask, {w} worker processes",
    "dask_processes_chunks": "dask, {w} processes, read in task",
    "dask_threads": "dask, {w} threads",
    "dask_threads_chunks": "dask, {w} threads, read in task",
    "numpy_loop": "numpy loop (1 process)",
    "numpy_memory": "numpy loop, data in RAM",
    "dask_ml_incremental": "dask-ml IncrementalPCA",
    "sklearn_pca": "scikit-learn PCA (in RAM)",
}


def _fmt_ratio(v: dict, key: str) -> str:
    return f"{v[key]:.2f}x" if key in v else "-"


def format_table(report: dict) -> str:
    db, s = report["database"], report["settings"]
    w = s["workers"]
    lines = [
        f"filtershift bench: {db['n_filters']:,} filters ({db['bytes'] / 1e9:.2f} GB incl. layer ids), {db['n_layers']:,} layers, "
        f"{db['n_models']:,} models; {w} workers; medians of {s['repeats']} interleaved runs",
        f"groupings: {', '.join(db['groupings'])} (2-D: all, {', '.join(db['groupings_2d']) or '-'})",
        "",
        f"{'pass':<34}{'variant':<30}{'seconds':>9}{'CPU s':>8}{'Mfilt/s':>9}{'MB/s':>8}{'peak MiB':>10}{'vs loop':>9}{'vs RAM':>8}",
    ]
    for name, p in report["passes"].items():
        first = True
        for v, r in p["variants"].items():
            peak = f"{r['peak_rss_mib']:.0f}" + ("/w" if v.startswith("dask_processes") else "")
            lines.append(
                f"{(p['title'] if first else ''):<34}{LABELS[v].format(w=w):<30}{r['seconds']:>9.2f}{r['cpu_seconds']:>8.1f}{r['filters_per_s'] / 1e6:>9.1f}"
                f"{r['bytes_per_s'] / 1e6:>8.0f}{peak:>10}{_fmt_ratio(r, 'ratio_vs_numpy_loop'):>9}{_fmt_ratio(r, 'ratio_vs_numpy_memory'):>8}"
            )
            first = False
    first = True
    for v, r in report["analysis_total"].items():
        lines.append(
            f"{('all three reads' if first else ''):<34}{LABELS[v].format(w=w):<30}{r['seconds']:>9.2f}{r['cpu_seconds']:>8.1f}{r['filters_per_s'] / 1e6:>9.1f}"
            f"{'':>8}{r['peak_rss_mib']:>10.0f}{_fmt_ratio(r, 'ratio_vs_numpy_loop'):>9}{_fmt_ratio(r, 'ratio_vs_numpy_memory'):>8}"
        )
        first = False
    if report.get("load_in_memory_seconds") is not None:
        lines.append(f"(loading the store into RAM for the in-memory variants: {report['load_in_memory_seconds']:.2f} s, not included)")
    ex = report.get("extraction")
    if ex:
        lines += ["", f"extraction: {ex['n_checkpoints']} checkpoints, {ex['n_kernels']:,} kernels (warm clusters)",
                  f"{'variant':<34}{'seconds':>9}{'ckpt/s':>9}{'kernels/s':>13}{'vs loop':>9}"]
        for v, r in ex["variants"].items():
            lines.append(f"{v.replace('_', ' '):<34}{r['seconds']:>9.2f}{r['checkpoints_per_s']:>9.1f}{r['kernels_per_s']:>13,.0f}{r['ratio_vs_plain_loop']:>8.2f}x")
    for what, why in report.get("skipped", {}).items():
        lines.append(f"skipped {what}: {why}")
    return "\n".join(lines)

