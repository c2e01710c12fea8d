"""Scale beyond one machine, on paper: the full reference analysis (1,464,797,156 filters in 21,436
layers) from a bench report's measured per-core throughput.

    python -m filtershift.bench.scale REPORT.json [--disk-gbps 0.41] [--nodes 16] [--cores-per-node 32] [--fs-gbps 10]

Per read, the time is the larger of the CPU time (filters / (filters per CPU-second x cores)) and
the I/O time (bytes / bandwidth): 1.46e9 filters are 52.7 GB of float32 plus 5.9 GB of layer ids,
more than this machine's page cache, so every read comes from disk. The per-core rate is the one of
the ``dask_processes_chunks`` variant, what ``analyze`` runs (CPU seconds of the workers and the
scheduler: dask's overhead is in it). Scheduling adds about 1 ms per task on one scheduler (5,588
chunks a read).
"""

from __future__ import annotations

import argparse
import json
import math

FULL_N = 1_464_797_156
FULL_LAYERS = 21_436
BYTES_PER_ROW = 40
CHUNK_ROWS = 262_144
TASK_OVERHEAD_S = 1e-3


def estimate(report: dict, cores: int, bandwidth_gbps: float, n: int = FULL_N, variant: str = "dask_processes_chunks") -> dict:
    per_pass = {}
    tasks = math.ceil(n / CHUNK_ROWS)
    for name, p in report["passes"].items():
        v = p["variants"][variant]
        rate = p["n_filters"] / v["cpu_seconds"]  # filters per CPU-second
        cpu = n / (rate * cores)
        io = n * BYTES_PER_ROW / (bandwidth_gbps * 1e9)
        per_pass[name] = {"filters_per_cpu_s": rate, "cpu_bound_s": cpu, "io_bound_s": io,
                          "seconds": max(cpu, io) + tasks * TASK_OVERHEAD_S, "bound": "cpu" if cpu >= io else "io"}
    return {"cores": cores, "bandwidth_gbps": bandwidth_gbps, "passes": per_pass, "total_s": sum(p["seconds"] for p in per_pass.values())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report", help="a `filtershift bench --json` report")
    ap.add_argument("--local-cores", type=int, default=2)
    ap.add_argument("--disk-gbps", type=float, default=0.41, help="this machine's uncached read bandwidth (measured: dd iflag=direct)")
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--cores-per-node", type=int, default=32)
    ap.add_argument("--fs-gbps", type=float, default=10.0, help="aggregate parallel file system bandwidth of the allocation")
    args = ap.parse_args(argv)
    with open(args.report) as f:
        report = json.load(f)
    rows = [("this machine", estimate(report, args.local_cores, args.disk_gbps)),
            (f"{args.nodes} nodes x {args.cores_per_node} cores", estimate(report, args.nodes * args.cores_per_node, args.fs_gbps))]
    print(f"{'where':<24}{'read':<12}{'filt/CPU-s':>12}{'CPU-bound':>11}{'I/O-bound':>11}{'estimate':>10}")
    for where, est in rows:
        for name, p in est["passes"].items():
            print(f"{where:<24}{name:<12}{p['filters_per_cpu_s'] / 1e6:>10.2f} M{p['cpu_bound_s']:>10.0f}s{p['io_bound_s']:>10.0f}s{p['seconds']:>9.0f}s")
        print(f"{'':<24}{'total':<12}{'':>12}{'':>11}{'':>11}{est['total_s']:>9.0f}s  ({est['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
    main()
