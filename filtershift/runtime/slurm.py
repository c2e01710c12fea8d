"""``--cluster slurm``: dask workers as SLURM jobs through dask-jobqueue's ``SLURMCluster``.

Configuration is packaged, commented YAML (``filtershift/config/slurm.yaml``) loaded into
``dask.config`` under ``filtershift.slurm``; a site's ``cluster/slurm.yaml`` (looked up in the
working directory) and ``--cluster-config FILE`` override it, in that order. It is resolved once,
into a frozen :class:`SlurmSettings`, before any job is submitted; everything downstream — the job
script, the cluster, the scaling — is a function of that one value (docs/design.md §4).

``job_script(settings)`` renders the exact worker job script without a scheduler or a batch system;
``slurm_cluster(cluster_settings)`` starts the scheduler here and submits worker jobs, which log to
``<database>/logs/slurm/``; at the end their workers are closed so that the jobs end by themselves
(a cancelled job's log ends in a ``slurmstepd: error: *** JOB ... CANCELLED`` line), and on Ctrl-C
or SIGTERM every job it submitted is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import dask
import dask.config
import yaml
from dask.utils import parse_bytes

from filtershift.errors import FiltershiftError

CONFIG_KEY = "filtershift.slurm"
SITE_CONFIG = Path("cluster") / "slurm.yaml"
PLACEHOLDER_SCHEDULER = "tcp://<insert-scheduler-address-here>:8786"


def packaged_defaults() -> dict:
    """The packaged ``filtershift/config/slurm.yaml`` as a dict (``{"filtershift": {"slurm": …}}``)."""
    text = resources.files("filtershift").joinpath("config", "slurm.yaml").read_text()
    return yaml.safe_load(text)


# Like dask-jobqueue: packaged defaults are dask config defaults, so ~/.config/dask/*.yaml and
# DASK_FILTERSHIFT__SLURM__* variables override them the usual way.
dask.config.update_defaults(packaged_defaults())

# dask-jobqueue reads `jobqueue.<config_name>.*` for every argument left None (queue, account,
# interface, ...). Our jobs use a private section holding dask-jobqueue's *packaged* SLURM defaults,
# so a user's `jobqueue.slurm` config cannot change what runs: SlurmSettings is the one source.
JOBQUEUE_CONFIG_NAME = "filtershift-pinned"


def _pin_jobqueue_defaults(jobqueue) -> None:
    """Copy dask-jobqueue's packaged SLURM defaults into our private section (on first import)."""
    text = (Path(jobqueue.__file__).parent / "jobqueue.yaml").read_text()
    pinned = dict(yaml.safe_load(text)["jobqueue"]["slurm"])
    dask.config.set({f"jobqueue.{JOBQUEUE_CONFIG_NAME}": pinned})


class SlurmConfigError(FiltershiftError, ValueError):
    """A SLURM setting that cannot be used; the message names the key, the source and the fix."""


@dataclass(frozen=True)
class SlurmSettings:
    """Every choice ``--cluster slurm`` makes, resolved once (keys of ``filtershift/config/slurm.yaml``)."""

    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    job_name: str = "filtershift-worker"
    job_extra_directives: tuple[str, ...] = ()
    job_directives_skip: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    log_directory: str | None = None
    cores: int = 1
    processes: int = 1
    memory: str = "4GiB"
    python: str | None = None
    interface: str | None = None
    local_directory: str | None = None
    death_timeout: int = 60
    worker_extra_args: tuple[str, ...] = ()
    minimum_jobs: int = 1
    maximum_jobs: int = 4
    sources: tuple[str, ...] = ()

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], sources: tuple[str, ...] = ()) -> SlurmSettings:
        """Validate the ``filtershift.slurm`` mapping: unknown keys, wrong types and impossible values
        are errors that name the key and what to write instead."""
        where = " or ".join(sources) if sources else "the SLURM settings"
        flat = {}
        for key, value in _normalised(config).items():
            if key == "adaptive":
                if not isinstance(value, Mapping):
                    raise SlurmConfigError(f"{where}: 'adaptive' must be a mapping with minimum-jobs and maximum-jobs, got {value!r}")
                for sub, subvalue in _normalised(value).items():
                    if sub not in ("minimum-jobs", "maximum-jobs"):
                        raise SlurmConfigError(f"{where}: unknown key 'adaptive.{sub}'; use 'adaptive.minimum-jobs' or 'adaptive.maximum-jobs'")
                    flat[sub] = subvalue
            else:
                flat[key] = value
        known = {f.name.replace("_", "-"): f for f in fields(cls) if f.name != "sources"}
        kwargs: dict[str, Any] = {}
        for key, value in flat.items():
            if key not in known:
                names = ", ".join(sorted(k for k in known if k not in ("minimum-jobs", "maximum-jobs")))
                raise SlurmConfigError(f"{where}: unknown key {key!r}; known keys: {names}, adaptive.minimum-jobs, adaptive.maximum-jobs")
            kwargs[known[key].name] = _checked(key, value, known[key].type, where)
        settings = cls(**kwargs, sources=sources)
        settings._check_values(where)
        return settings

    def _check_values(self, where: str) -> None:
        if self.cores < 1 or self.processes < 1 or self.cores % self.processes:
            raise SlurmConfigError(f"{where}: cores ({self.cores}) must be a positive multiple of processes ({self.processes})")
        try:
            parse_bytes(self.memory)
        except ValueError:
            raise SlurmConfigError(f"{where}: memory {self.memory!r} is not a size; write e.g. memory: 4GiB") from None
        if not 0 <= self.minimum_jobs <= self.maximum_jobs or self.maximum_jobs < 1:
            raise SlurmConfigError(
                f"{where}: need 0 <= adaptive.minimum-jobs ({self.minimum_jobs}) <= adaptive.maximum-jobs ({self.maximum_jobs}), maximum-jobs >= 1"
            )


def _normalised(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).replace("_", "-"): v for k, v in mapping.items()}


_TYPE_NAMES = {"str | None": "a string or null", "str": "a string", "int": "an integer", "tuple[str, ...]": "a list of strings"}


def _checked(key: str, value: Any, annotation: str, where: str) -> Any:
    expected = _TYPE_NAMES[annotation]
    if key == "walltime" and isinstance(value, int) and not isinstance(value, bool):
        raise SlurmConfigError(
            f"{where}: walltime is the number {value}: YAML reads an unquoted 1:00:00 as a number; quote it: walltime: \"01:00:00\""
        )
    if annotation == "str | None" and (value is None or isinstance(value, str)):
        return value
    if annotation == "str" and isinstance(value, str):
        return value
    if key == "memory" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if annotation == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if annotation == "tuple[str, ...]":
        if value is None:
            return ()
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
    raise SlurmConfigError(f"{where}: {key} must be {expected}, got {value!r} ({type(value).__name__})")


def read_config_file(path: str | Path) -> dict:
    """The ``filtershift.slurm`` part of a YAML file laid out like the packaged defaults."""
    path = Path(path)
    if not path.is_file():
        raise SlurmConfigError(f"cluster config {path} does not exist; pass an existing YAML file to --cluster-config")
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise SlurmConfigError(f"cluster config {path} is not valid YAML: {err}") from None
    if not isinstance(document, Mapping) or set(document) != {"filtershift"} or not isinstance(document["filtershift"], Mapping):
        raise SlurmConfigError(f"cluster config {path}: put the settings under 'filtershift: slurm:' (see filtershift/config/slurm.yaml)")
    unknown = set(document["filtershift"]) - {"slurm"}
    if unknown:
        raise SlurmConfigError(f"cluster config {path}: unknown section filtershift.{sorted(unknown)[0]}; only filtershift.slurm is read here")
    return dict(document["filtershift"].get("slurm") or {})


def resolve_slurm_settings(config_file: str | Path | None = None, cwd: str | Path | None = None) -> SlurmSettings:
    """Resolve once: dask.config (packaged defaults, user dask config, environment) < ``cwd/cluster/slurm.yaml``
    < ``config_file``."""
    config = dask.config.get(CONFIG_KEY)
    sources = ["filtershift/config/slurm.yaml"]
    site = Path(cwd or ".") / SITE_CONFIG
    files = ([site] if site.is_file() else []) + ([Path(config_file)] if config_file else [])
    for path in files:
        config = dask.config.merge(_nested(config), _nested(read_config_file(path)))
        sources.append(str(path))
    return SlurmSettings.from_mapping(config, sources=tuple(sources))


def _nested(config: Mapping[str, Any]) -> dict:
    """Normalise keys so that ``job_name`` in one file overrides ``job-name`` in another."""
    return {k: _nested(v) if isinstance(v, Mapping) else v for k, v in _normalised(config).items()}


def job_kwargs(settings: SlurmSettings) -> dict[str, Any]:
    """Keyword arguments of ``SLURMJob`` / ``SLURMCluster``, every one explicit so that dask-jobqueue's
    own ``jobqueue.slurm`` config cannot change what runs."""
    return dict(
        queue=settings.queue,
        account=settings.account,
        walltime=settings.walltime,
        job_name=settings.job_name,
        job_extra_directives=list(settings.job_extra_directives),
        job_directives_skip=list(settings.job_directives_skip),
        job_script_prologue=list(settings.job_script_prologue),
        log_directory=settings.log_directory,
        cores=settings.cores,
        processes=settings.processes,
        memory=settings.memory,
        python=settings.python or sys.executable,
        interface=settings.interface,
        local_directory=settings.local_directory,
        death_timeout=settings.death_timeout,
        worker_extra_args=list(settings.worker_extra_args),
        # the deprecated aliases, pinned empty so that a jobqueue config cannot re-enable them
        job_cpu=None,
        job_mem=None,
        config_name=JOBQUEUE_CONFIG_NAME,
    )


def job_script(settings: SlurmSettings, scheduler: str = PLACEHOLDER_SCHEDULER, worker_number: int = 0) -> str:
    """The exact script the ``worker_number``-th worker job submits, for a scheduler at ``scheduler``
    (no cluster or batch system needed; workers are named ``<job-name>-<number>``)."""
    SLURMJob = _import_jobqueue().slurm.SLURMJob
    return SLURMJob(scheduler, name=f"{settings.job_name}-{worker_number}", **job_kwargs(settings)).job_script()


def _import_jobqueue():
    """Import dask-jobqueue without its import-time SIGINT handler: ``dask_jobqueue/runner.py``
    (0.9.0) runs ``signal.signal(SIGINT, lambda *_: sys.exit())``, which turns Ctrl-C into a silent
    exit with status 0 in every program that imports it. Ctrl-C stays a KeyboardInterrupt here."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    import dask_jobqueue
    import dask_jobqueue.slurm

    if dask.config.get(f"jobqueue.{JOBQUEUE_CONFIG_NAME}", None) is None:
        _pin_jobqueue_defaults(dask_jobqueue)

    if main:
        current = signal.getsignal(signal.SIGINT)
        if getattr(current, "__module__", None) == "dask_jobqueue.runner":
            if getattr(previous, "__module__", None) == "dask_jobqueue.runner" or previous is None:
                previous = signal.default_int_handler
            signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


# How long a worker job may take to end on its own once its workers were asked to close, before
# it is cancelled (a cancelled job's log ends in "slurmstepd: error: *** JOB ... CANCELLED").
GRACEFUL_END_SECONDS = 30.0
_LIVE_STATES = "PENDING,CONFIGURING,RUNNING,SUSPENDED"
DEFAULT_LOG_DIRECTORY = Path("logs") / "slurm"


def _cancel(job_ids: set[str]) -> None:
    """``scancel`` whatever is left of the jobs submitted here (after a clean close: nothing)."""
    if not job_ids:
        return
    queued = subprocess.run(["squeue", "--noheader", "--format=%i", f"--states={_LIVE_STATES}", "--jobs", ",".join(sorted(job_ids))], capture_output=True, text=True)
    left = sorted(set(queued.stdout.split()) & job_ids)
    if left:
        print(f"cancelling SLURM jobs {' '.join(left)}", file=sys.stderr, flush=True)
        subprocess.run(["scancel", *left], capture_output=True, text=True)


def close_scheduler(scheduler_file: str, timeout: float = 10.0) -> None:
    """End a dask cluster the way it ends by itself: retire and close every worker (each nanny exits
    gracefully), then shut the scheduler down. ``cluster/filtershift.sbatch`` calls this at its end,
    so that its srun steps finish on their own instead of being cancelled."""
    from distributed import Client

    with Client(scheduler_file=scheduler_file, timeout=timeout) as client:
        workers = list(client.scheduler_info(n_workers=-1)["workers"])
        if workers:
            client.retire_workers(workers, close_workers=True)
        client.shutdown()


@contextlib.contextmanager
def sigterm_raises_interrupt() -> Iterator[None]:
    """Treat SIGTERM (``kill``, ``scancel`` of the job running filtershift) like Ctrl-C, so that the
    same clean shutdown runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


async def _job_state(job_id: str) -> str | None:
    """The SLURM state of a job that has not ended (PENDING, RUNNING, ...), or None once it has."""
    proc = await asyncio.create_subprocess_exec(
        "squeue", "--noheader", "--format=%T", f"--states={_LIVE_STATES}", "--jobs", job_id,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    states = out.decode().split()
    return states[0] if proc.returncode == 0 and states else None


async def _close_workers(scheduler: str, names: list[str]) -> None:
    """Ask the scheduler to retire and close those of the named workers it still has (adaptive
    scaling closes a worker itself before it lets the job go)."""
    from distributed.core import rpc

    with contextlib.suppress(OSError):  # the scheduler is gone: the workers exit by themselves
        async with rpc(scheduler) as comm:
            await comm.retire_workers(names=names, close_workers=True, remove=True)


async def _end_gracefully(job_id: str, scheduler: str, names: list[str], timeout: float) -> bool:
    """Close the job's workers and wait until the job has ended by itself, at most ``timeout``
    seconds; the request is repeated, so that a worker that registers only now is closed too."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await _job_state(job_id) is not None:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await _close_workers(scheduler, names)
        await asyncio.sleep(0.5)
    return True


def log_directory(settings: SlurmSettings, run_folder: str | Path | None) -> Path:
    """Where the worker jobs' output goes: the settings' ``log-directory`` if set, else
    ``<run folder>/logs/slurm`` (the database of the command), else ``./logs/slurm``; absolute."""
    chosen = settings.log_directory or (Path(run_folder) / DEFAULT_LOG_DIRECTORY if run_folder else DEFAULT_LOG_DIRECTORY)
    return Path(chosen).expanduser().absolute()


@contextlib.contextmanager
def slurm_cluster(cluster_settings) -> Iterator[Any]:
    """A ``SLURMCluster`` from the resolved SLURM settings, scaled adaptively between
    ``adaptive.minimum-jobs`` and ``adaptive.maximum-jobs`` (or to exactly ``--workers`` jobs).

    Each job's output goes to :func:`log_directory` (made with the process umask). A worker job
    that is no longer needed — at the normal end or when adaptive scaling lets it go — has its
    workers closed through the scheduler and ends by itself (state COMPLETED, no "CANCELLED" line
    in its log); only one that does not end within ``GRACEFUL_END_SECONDS`` is cancelled. On
    Ctrl-C or SIGTERM every job still queued or running is cancelled at once."""
    jobqueue = _import_jobqueue()
    SLURMCluster, SLURMJob = jobqueue.SLURMCluster, jobqueue.slurm.SLURMJob
    settings = resolve_slurm_settings(getattr(cluster_settings, "cluster_config", None))
    logs = log_directory(settings, getattr(cluster_settings, "run_folder", None))
    logs.mkdir(parents=True, exist_ok=True)
    settings = replace(settings, log_directory=str(logs))
    submitted: set[str] = set()
    interrupted = threading.Event()

    class TrackedSLURMJob(SLURMJob):
        """Remembers its SLURM job id (so that a shutdown interrupted half-way can still cancel it),
        and lets its workers exit before falling back to ``scancel``."""

        async def start(self):
            await super().start()
            if self.job_id:
                submitted.add(str(self.job_id))

        async def close(self):
            if self.job_id and not interrupted.is_set():
                names = [self.name] + [f"{self.name}-{i}" for i in range(settings.processes)]
                state = await _job_state(self.job_id)
                if state is None:
                    return  # ended already: nothing to cancel
                if state == "RUNNING" and await _end_gracefully(self.job_id, self.scheduler, names, GRACEFUL_END_SECONDS):
                    return
            await super().close()

    with sigterm_raises_interrupt():
        cluster = SLURMCluster(
            job_cls=TrackedSLURMJob,
            name=settings.job_name,  # workers are named <job-name>-<n>, as job_script() renders them
            scheduler_options={"dashboard_address": cluster_settings.dashboard_address},
            **job_kwargs(settings),
        )
        try:
            if cluster_settings.workers:
                cluster.scale(jobs=cluster_settings.workers)
            else:
                cluster.adapt(minimum_jobs=settings.minimum_jobs, maximum_jobs=settings.maximum_jobs)
            yield cluster
        except BaseException as exc:
            if not isinstance(exc, Exception):  # Ctrl-C, SIGTERM, exit: stop now, cancel the jobs
                interrupted.set()
            raise
        finally:
            try:
                cluster.close()
            finally:
                _cancel(submitted)
