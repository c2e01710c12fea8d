"""Choosing where the work runs: the one edge that knows about clusters (docs/design.md §4).

Stage code calls ``dask.compute``; whichever client is current executes it. Here we resolve the
command line once into a frozen :class:`ClusterSettings` and open the cluster it names.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass

CLUSTER_KINDS = ("local", "slurm")


@dataclass(frozen=True)
class ClusterSettings:
    """Where to run: an existing scheduler, a LocalCluster, or SLURM jobs through dask-jobqueue."""

    kind: str = "local"
    scheduler: str | None = None
    workers: int | None = None
    threads_per_worker: int | None = None
    memory_limit: str | None = None
    dashboard_address: str = ":8787"
    cluster_config: str | None = None  # --cluster-config: a SLURM settings YAML (see filtershift/runtime/slurm.py)
    run_folder: str | None = None  # the database (or zoo folder) of the command: SLURM job logs go to <it>/logs/slurm

    def __post_init__(self) -> None:
        if self.kind not in CLUSTER_KINDS:
            raise ValueError(f"--cluster must be one of {', '.join(CLUSTER_KINDS)}, got {self.kind!r}")


def add_cluster_arguments(parser) -> None:
    """The cluster options every command takes, and ``--no-progress`` (every command that computes
    takes these)."""
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress output (bars are drawn only on a terminal; a redirected log gets one line per stage)")
    group = parser.add_argument_group("cluster")
    group.add_argument("--scheduler", metavar="ADDRESS", help="use an existing dask scheduler (tcp://HOST:PORT or a scheduler file); nothing is started or stopped")
    group.add_argument("--cluster", choices=CLUSTER_KINDS, default="local", help="start a cluster of this kind (default: local)")
    group.add_argument("--workers", type=int, help="number of workers (local: default = cores / threads per worker)")
    group.add_argument("--threads-per-worker", type=int, help="threads per worker (local default: 1)")
    group.add_argument("--memory-limit", help="memory limit per worker, e.g. 4GiB (local default: machine memory / workers)")
    group.add_argument("--dashboard-address", default=":8787", help="where the dashboard listens (default :8787, falls back to a free port)")
    group.add_argument("--cluster-config", metavar="FILE", help="SLURM settings YAML overriding ./cluster/slurm.yaml and the packaged defaults (--cluster slurm)")


def settings_from_args(args, run_folder: str | os.PathLike | None = None) -> ClusterSettings:
    """The cluster options of ``args``. ``run_folder`` (default: the command's database ``db``, or
    the zoo's ``directory``) is where SLURM worker logs go, under ``logs/slurm``."""
    folder = run_folder or getattr(args, "db", None) or getattr(args, "directory", None)
    return ClusterSettings(
        kind=args.cluster,
        scheduler=args.scheduler,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        memory_limit=args.memory_limit,
        dashboard_address=args.dashboard_address,
        cluster_config=getattr(args, "cluster_config", None),
        run_folder=str(folder) if folder else None,
    )


def local_cluster_kwargs(settings: ClusterSettings, n_cores: int | None = None) -> dict:
    """LocalCluster arguments sized to the machine: one thread per worker by default (torch and
    numpy each release the GIL, and processes isolate a crashing checkpoint reader)."""
    n_cores = n_cores or os.cpu_count() or 1
    threads = settings.threads_per_worker or 1
    workers = settings.workers or max(1, n_cores // threads)
    kwargs = dict(n_workers=workers, threads_per_worker=threads, processes=True, dashboard_address=settings.dashboard_address)
    kwargs["memory_limit"] = settings.memory_limit or "auto"
    return kwargs


@contextlib.contextmanager
def connect(settings: ClusterSettings, out=None) -> Iterator[object]:
    """Open the cluster ``settings`` names, print its dashboard address, yield a ``Client``; on exit
    close only what was started here (an existing scheduler and its workers are left running).
    A Ctrl-C stops a cluster started here without log noise (see :mod:`filtershift.runtime.quiet_shutdown`)."""
    from distributed import Client, LocalCluster

    distributed_log = logging.getLogger("distributed")
    with contextlib.ExitStack() as stack:
        stack.callback(distributed_log.setLevel, distributed_log.level)  # runs last, once all is closed
        if settings.scheduler:
            if os.path.isfile(settings.scheduler):
                client = stack.enter_context(Client(scheduler_file=settings.scheduler))
            else:
                client = stack.enter_context(Client(settings.scheduler))
        elif settings.kind == "slurm":
            from filtershift.runtime.slurm import slurm_cluster

            cluster = stack.enter_context(slurm_cluster(settings))
            client = stack.enter_context(Client(cluster))
        else:
            cluster = stack.enter_context(LocalCluster(**local_cluster_kwargs(settings)))
            client = stack.enter_context(Client(cluster))
        started_here = not settings.scheduler
        if started_here:
            from filtershift.runtime.quiet_shutdown import QuietShutdown

            client.register_plugin(QuietShutdown(), name=QuietShutdown.name)
        print(f"dask dashboard: {client.dashboard_link}", file=out or sys.stderr, flush=True)
        try:
            yield client
        except KeyboardInterrupt:
            if started_here:  # the workers we kill and the tasks we drop were asked for: no warnings
                distributed_log.setLevel(logging.ERROR)
            raise
