"""``filtershift run JOB.yaml``: the stages of a job spec, in order, skipping what is current.

Stages: ``zoo`` (only for ``zoo:`` jobs) -> ``extract`` -> ``analyze:<name>`` per analysis ->
``figures:<name>`` per drawn analysis. Each stage calls the same functions as its command
(``filtershift.zoo.build``, ``filtershift.extraction.extract``, ``filtershift.analysis.compute``,
``filtershift.figures``), on whatever dask client is current; this module never opens a cluster.

A stage is *current* — and skipped — when its outputs are complete and were made from the present
inputs with the present settings:

- zoo: ``DIR/manifest.csv`` exists, every checkpoint in it exists, and the zoo's stamp
  (``DIR/.filtershift-zoo.json``) records the same size, seed and training plan;
- extract: the database holds every manifest row as ``ok`` from the same file (size and mtime) —
  :func:`filtershift.extraction.extract.plan_extraction` finds nothing to stage;
- analyze: ``DB/results/NAME/provenance.json`` exists (it is written last), records this analysis'
  settings, and the database fingerprint it was computed from is the present one;
- figures: the stamp ``OUT/NAME/figures.json`` names the present results (their fingerprint and
  creation time) and formats, and every file it lists exists.

Each finished, skipped, failed or interrupted stage appends one JSON line to
``DB/results/pipeline.jsonl``: stage, status, reason, start time, seconds, and its volume
(models, filters, bytes, files).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from filtershift.errors import FiltershiftError
from filtershift.pipeline.jobspec import AnalysisSpec, JobSpec, JobSpecError

LOG_FILE = "pipeline.jsonl"
ZOO_STAMP = ".filtershift-zoo.json"
FIGURES_STAMP = "figures.json"


@dataclass(frozen=True)
class Stage:
    """One step of a job: ``kind`` is zoo, extract, analyze or figures; ``analysis`` for the last two."""

    kind: str
    analysis: AnalysisSpec | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.analysis.name}" if self.analysis else self.kind


@dataclass(frozen=True)
class StageRecord:
    """What happened to a stage (one line of ``pipeline.jsonl``)."""

    job: str
    stage: str
    status: str  # done | skipped | failed | interrupted
    reason: str
    started: str
    seconds: float
    volume: dict[str, Any] = field(default_factory=dict)
    cluster: str = ""

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=False, default=str)


class StageError(FiltershiftError, RuntimeError):
    """A stage that could not run; the message names the stage and what to fix."""


def stages(job: JobSpec) -> tuple[Stage, ...]:
    """The stages of ``job`` in execution order (the plan; nothing is read)."""
    out = [Stage("zoo")] if job.zoo else []
    out.append(Stage("extract"))
    out += [Stage("analyze", a) for a in job.analyses]
    if job.figures:
        out += [Stage("figures", a) for a in job.analyses if a.name in job.figures.analyses]
    return tuple(out)


# ------------------------------------------------------------------------------------------------
# Is a stage current?


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def zoo_stamp(job: JobSpec) -> dict[str, Any]:
    """What the zoo stage records: size, seed, and a digest of the training plan (a changed zoo
    recipe in a newer filtershift makes the old zoo stale)."""
    import hashlib

    from filtershift.zoo.plan import plan_zoo

    plan = hashlib.sha256(repr(plan_zoo(job.zoo.size, job.zoo.seed)).encode()).hexdigest()[:16]
    return {"size": job.zoo.size, "seed": job.zoo.seed, "plan": plan}


def zoo_current(job: JobSpec) -> tuple[bool, str]:
    zoo = job.zoo
    stamp = _read_json(zoo.dir / ZOO_STAMP)
    if not zoo.manifest.is_file():
        return False, f"no {zoo.manifest}"
    if stamp != zoo_stamp(job):
        return False, f"the zoo in {zoo.dir} was not built as size {zoo.size}, seed {zoo.seed} with this filtershift's zoo plan"
    import pandas as pd

    paths = pd.read_csv(zoo.manifest)["path"]
    missing = [p for p in paths if not (zoo.dir / p).is_file()]
    if missing:
        return False, f"{len(missing)} checkpoint(s) of the manifest are missing, e.g. {missing[0]}"
    return True, f"{len(paths)} checkpoints in {zoo.dir}"


def extract_current(job: JobSpec) -> tuple[bool, str]:
    if not job.manifest_path.is_file():
        return False, f"no manifest yet ({job.manifest_path})"
    from filtershift.extraction.extract import plan_extraction
    from filtershift.extraction.manifest import read_manifest

    plan = plan_extraction(read_manifest(job.manifest_path), job.db)
    return not plan.to_stage, plan.describe()


def _fingerprint(db: Path) -> str | None:
    from filtershift.store import DatabaseError, open_database
    from filtershift.store.fingerprint import fingerprint

    try:
        return fingerprint(open_database(db))
    except DatabaseError:
        return None


def analyze_current(job: JobSpec, analysis: AnalysisSpec) -> tuple[bool, str]:
    from filtershift.analysis.results import find_results

    results = find_results(job.db, analysis.name)
    if results is None:
        return False, "no complete results"
    if results.job_analysis != analysis.as_dict():
        return False, "the results were made with other settings"
    if results.database_fingerprint != _fingerprint(job.db):
        return False, "the database changed since"
    return True, f"results of {results.created}"


def _figures_signature(job: JobSpec, analysis: AnalysisSpec) -> dict[str, Any] | None:
    from filtershift.analysis.results import find_results

    results = find_results(job.db, analysis.name)
    if results is None:
        return None
    return {"results": f"{results.database_fingerprint}@{results.created}", "formats": list(job.figures.formats)}


def figures_current(job: JobSpec, analysis: AnalysisSpec) -> tuple[bool, str]:
    folder = job.figures.out / analysis.name
    stamp = _read_json(folder / FIGURES_STAMP)
    if stamp is None:
        return False, "no figures yet"
    if {k: stamp.get(k) for k in ("results", "formats")} != _figures_signature(job, analysis):
        return False, "the results or formats changed since"
    if not all((folder / f).is_file() for f in stamp.get("files", [])):
        return False, "some figure files are missing"
    return True, f"{len(stamp['files'])} files in {folder}"


def is_current(job: JobSpec, stage: Stage) -> tuple[bool, str]:
    """(current, why) for ``stage``, from the files on disk now."""
    if stage.kind == "zoo":
        return zoo_current(job)
    if stage.kind == "extract":
        return extract_current(job)
    if stage.kind == "analyze":
        return analyze_current(job, stage.analysis)
    return figures_current(job, stage.analysis)


def describe_plan(job: JobSpec) -> str:
    """What a run would do now (``filtershift run --dry-run``). A stage after one that runs is
    shown as running too: its inputs are about to change."""
    lines, upstream_runs = [job.describe()], False
    for i, stage in enumerate(stages(job), start=1):
        current, why = is_current(job, stage)
        if upstream_runs and stage.kind != "zoo":
            current, why = False, "an earlier stage runs first"
        upstream_runs = upstream_runs or not current
        lines.append(f"  [{i}] {stage.key}: {'skip' if current else 'run'} ({why})")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Running a stage: each returns its volume


def run_zoo(job: JobSpec) -> dict[str, Any]:
    from filtershift.store.files import atomic_write_text
    from filtershift.zoo.build import build_zoo
    from filtershift.zoo.plan import plan_zoo

    zoo = job.zoo
    (zoo.dir / ZOO_STAMP).unlink(missing_ok=True)  # incomplete until rewritten at the end
    specs = plan_zoo(zoo.size, zoo.seed)
    result = build_zoo(zoo.dir, zoo.size, zoo.seed, specs)
    atomic_write_text(zoo.dir / ZOO_STAMP, json.dumps(zoo_stamp(job)))
    m = result.manifest
    n_kernels = int(m["n_kernels_3x3"].sum()) if "n_kernels_3x3" in m else None
    return {"models": len(specs), "checkpoints": len(m), "kernels_3x3": n_kernels, "bytes": _size(zoo.dir)}


def run_extract(job: JobSpec, show_progress: bool) -> dict[str, Any]:
    from filtershift import api, store

    # on the run's client, like `filtershift extract` (a changed checkpoint is refused before any task)
    report = api.extract(job.manifest_path, job.db, chunk_rows=job.chunk_rows, progress=show_progress)
    statuses = report.statuses["status"].value_counts().to_dict()
    for row in report.statuses[report.statuses["status"] == "failed"].itertuples():
        print(f"  failed: {row.name} ({row.path}): {row.error}", file=sys.stderr)
    return {"models_new": report.n_new_models, "filters_new": report.n_new_filters, "failed": report.n_failed,
            "statuses": {str(k): int(v) for k, v in statuses.items()}, "bytes": _size(job.db / store.FILTERS_STORE)}


def run_analyze(job: JobSpec, analysis: AnalysisSpec) -> dict[str, Any]:
    from filtershift import api
    from filtershift.analysis.plan import PlanError

    parameters = {"job": str(job.source), "job_analysis": analysis.as_dict()}
    try:  # on the run's client, like `filtershift analyze`
        results = api.analyze(job.db, settings=analysis, parameters=parameters, progress=True)
    except PlanError as exc:  # raised before any filter is read
        raise StageError(f"analysis {analysis.name!r} in {job.source}: {exc}") from None
    read = results.analysed
    return {"filters": read["n_filters"], "layers": read["n_layers"], "models": read["n_models"],
            "chunks_read": read["n_chunks_read"], "bytes_read": read["n_filters"] * 9 * 4}


def run_figures(job: JobSpec, analysis: AnalysisSpec) -> dict[str, Any]:
    from filtershift.analysis.results import load_results
    from filtershift.figures.catalog import build_figures
    from filtershift.figures.save import save_figures
    from filtershift.store import open_database
    from filtershift.store.files import atomic_write_text

    folder = job.figures.out / analysis.name
    (folder / FIGURES_STAMP).unlink(missing_ok=True)
    results = load_results(job.db, analysis.name)
    figures = build_figures(results, open_database(job.db))
    written = save_figures(figures, folder, formats=tuple(job.figures.formats))
    files = sorted(str(Path(p).relative_to(folder)) for p in written)
    stamp = dict(_figures_signature(job, analysis), files=files)
    atomic_write_text(folder / FIGURES_STAMP, json.dumps(stamp, indent=1))
    return {"figures": len(figures), "files": len(files), "bytes": sum((folder / f).stat().st_size for f in files)}


def figures_available() -> str | None:
    """Why figures cannot be drawn here, or None."""
    try:
        import filtershift.figures.catalog  # noqa: F401
        import filtershift.figures.save  # noqa: F401
    except ImportError as exc:
        return f"figures unavailable ({exc})"
    return None


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


# ------------------------------------------------------------------------------------------------
# The run


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _append_log(job: JobSpec, record: StageRecord) -> None:
    log = log_path(job.db)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as f:
        f.write(record.to_json() + "\n")


def run_job(
    job: JobSpec,
    force: bool = False,
    show_progress: bool = True,
    cluster: str = "",
    out: TextIO | None = None,
    progress: Callable[[str], Any] | None = None,
) -> list[StageRecord]:
    """Run the stages of ``job`` in order on the current dask client, skipping current ones
    (unless ``force``). ``progress(label)`` returns a context manager shown around each running
    stage (a progress bar); ``show_progress`` is passed to the extract stage (its own bars). Returns one record per stage; each is also appended to
    ``DB/results/pipeline.jsonl``. A KeyboardInterrupt is recorded and re-raised."""
    out = out or sys.stderr
    records = []
    all_stages = stages(job)
    for i, stage in enumerate(all_stages, start=1):
        started, t0 = _now(), time.perf_counter()

        def record(status: str, reason: str, volume: dict | None = None) -> StageRecord:
            r = StageRecord(job.name, stage.key, status, reason, started, round(time.perf_counter() - t0, 3), volume or {}, cluster)
            _append_log(job, r)
            records.append(r)
            return r

        head = f"[{i}/{len(all_stages)}] {stage.key}"
        if stage.kind == "figures" and (why := figures_available()):
            print(f"{head}: skipped, {why}", file=out, flush=True)
            record("skipped", why)
            continue
        current, why = (False, "forced") if force else is_current(job, stage)
        if current:
            print(f"{head}: up to date ({why})", file=out, flush=True)
            record("skipped", why)
            continue
        print(f"{head}: running ({why})", file=out, flush=True)
        runner = {"zoo": lambda: run_zoo(job), "extract": lambda: run_extract(job, show_progress),
                  "analyze": lambda: run_analyze(job, stage.analysis),
                  "figures": lambda: run_figures(job, stage.analysis)}[stage.kind]
        try:
            with _maybe(progress, stage.key):
                volume = runner()
        except KeyboardInterrupt:
            record("interrupted", "Ctrl-C or SIGTERM")
            raise
        except Exception as exc:
            record("failed", f"{type(exc).__name__}: {exc}")
            raise
        r = record("done", why, volume)
        print(f"{head}: done in {r.seconds:.1f} s " + json.dumps(volume, default=str), file=out, flush=True)
    return records


class _maybe:
    """``progress(label)`` if both are given, else nothing."""

    def __init__(self, progress, label):
        self.cm = progress(label) if (progress and label) else None

    def __enter__(self):
        return self.cm.__enter__() if self.cm else None

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc) if self.cm else False


# ------------------------------------------------------------------------------------------------
# Monitoring: counting a client's tasks on the scheduler (per-stage progress bars)

from distributed.diagnostics.plugin import SchedulerPlugin  # noqa: E402  (only monitoring needs it)


class TaskCounter(SchedulerPlugin):
    """Scheduler plugin: the tasks one client submitted, and how many of them have finished."""

    name = "filtershift-task-counter"

    def __init__(self, client_id: str):
        self.client_id = client_id
        self.keys: set = set()
        self.added = 0  # a key computed again (same token, a later stage) counts again
        self.done = 0

    def update_graph(self, scheduler, *, client=None, tasks=(), **kwargs):
        if client == self.client_id:
            self.keys.update(tasks)
            self.added += len(tasks)

    def transition(self, key, start, finish, *args, **kwargs):
        if start == "processing" and finish in ("memory", "erred") and key in self.keys:
            self.done += 1

    def snapshot(self) -> tuple[int, int]:
        return self.added, self.done


def log_path(db: str | os.PathLike) -> Path:
    """``DB/results/pipeline.jsonl``: one line per stage run, skipped, failed or interrupted."""
    from filtershift.analysis.results import results_root

    return results_root(db) / LOG_FILE


def read_log(db: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The records of ``DB/results/pipeline.jsonl``, oldest first."""
    path = log_path(db)
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                yield json.loads(line)


__all__ = ["Stage", "StageError", "StageRecord", "describe_plan", "is_current", "log_path", "read_log", "run_job", "stages", "JobSpecError"]
