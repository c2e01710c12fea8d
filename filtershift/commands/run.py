"""``filtershift run JOB.yaml``: the whole pipeline of a job spec (see :mod:`filtershift.pipeline.stages`)."""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

from filtershift.runtime.cluster import add_cluster_arguments, connect, settings_from_args
from filtershift.runtime.progress import on_terminal


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a job spec: build the zoo or read the manifest, extract, analyze, draw figures",
        description="Run every stage of a job spec (jobs/*.yaml) in order — zoo, extract, one analyze per analysis, "
        "figures — skipping stages whose outputs are complete and current. The spec is checked before any work "
        "starts. Each stage's duration and volume is appended to DB/results/pipeline.jsonl.",
    )
    parser.add_argument("job", help="job spec (YAML), e.g. jobs/demo.yaml; relative paths in it are relative to the working directory")
    parser.add_argument("--dry-run", action="store_true", help="check the spec, print which stages would run or be skipped, and exit")
    parser.add_argument("--force", action="store_true", help="run every stage, even the current ones")
    add_cluster_arguments(parser)
    parser.set_defaults(func=execute)


def execute(args) -> int:
    from filtershift.analysis.results import results_path
    from filtershift.pipeline.jobspec import load_job
    from filtershift.pipeline.stages import StageError, describe_plan, log_path, run_job
    from filtershift.runtime.slurm import sigterm_raises_interrupt

    job = load_job(args.job)
    check_groupings(job)
    settings = settings_from_args(args, run_folder=job.db)
    if settings.kind == "slurm" and not settings.scheduler:
        from filtershift.runtime.slurm import resolve_slurm_settings

        resolve_slurm_settings(settings.cluster_config)  # bad SLURM settings fail before any work too
    if args.dry_run:
        print(describe_plan(job))
        return 0
    label = settings.scheduler or settings.kind
    print(job.describe(), file=sys.stderr)
    if not args.force and nothing_to_do(job):  # no cluster to start: every stage is skipped
        records = run_job(job, cluster="none")
        print(f"job {job.name}: nothing to do, every stage is up to date (no cluster started; --force reruns them)", file=sys.stderr)
    else:
        with sigterm_raises_interrupt(), connect(settings) as client:
            progress = None if args.no_progress or not on_terminal() else _progress_factory(client)
            try:
                records = run_job(job, force=args.force, show_progress=not args.no_progress and progress is None,
                                  cluster=label, progress=progress)
            except StageError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
            finally:
                if progress is not None:
                    progress.close()
    failed = sum(int(r.volume.get("failed", 0)) for r in records)
    print(f"job {job.name}: {sum(r.status == 'done' for r in records)} stage(s) run, "
          f"{sum(r.status == 'skipped' for r in records)} up to date; log: {log_path(job.db)}")
    print(f"  database: {job.db}   (filtershift info {job.db})")
    for analysis in job.analyses:
        print(f"  results:  {results_path(job.db, analysis.name)}")
    if job.figures:
        print(f"  figures:  {job.figures.out}   (filtershift report {job.db} --name NAME for one HTML page)")
    if failed:
        print(f"{failed} checkpoint(s) failed to extract (see above); the others were analysed", file=sys.stderr)
        return 1
    return 0


def nothing_to_do(job) -> bool:
    """Whether every stage of ``job`` is current (or, for figures, cannot run here), decided from
    the files alone, before any cluster is started."""
    from filtershift.pipeline.stages import figures_available, is_current, stages

    return all((stage.kind == "figures" and figures_available()) or is_current(job, stage)[0] for stage in stages(job))


def check_groupings(job) -> None:
    """Fail before any work when an analysis groups by a column that cannot exist (checked when
    the manifest is already there: the given one, or a zoo built earlier)."""
    from filtershift import store
    from filtershift.analysis.plan import MODEL_GROUPING
    from filtershift.pipeline.jobspec import JobSpecError

    manifest = job.manifest_path
    if not manifest.is_file() or manifest.suffix.lower() != ".csv":
        return
    import pandas as pd

    columns = set(pd.read_csv(manifest, nrows=0).columns)
    known = columns | set(store.LAYER_COLUMNS) | set(store.MODEL_COLUMNS) | {MODEL_GROUPING}
    known |= {f"model_{c}" for c in ("name", "n_filters", "path", "status", "error")}
    for i, analysis in enumerate(job.analyses):
        for by in analysis.by:
            missing = [c.strip() for c in by.split("+") if c.strip() not in known]
            if missing:
                raise JobSpecError(
                    f"{job.source}: analyses[{i}].by: no column {', '.join(missing)} in the layers or models of {manifest}; "
                    f"use 'model' or one of: {', '.join(sorted(known - {'start', 'stop'}))} (cross them with '+')"
                )


# ------------------------------------------------------------------------------------------------
# A progress bar per stage, for any distributed cluster: a scheduler plugin
# (filtershift.pipeline.TaskCounter) counts the tasks this client submits and finishes; the
# client polls it.


def _counts(dask_scheduler, name: str) -> tuple[int, int]:
    return dask_scheduler.plugins[name].snapshot()


class _Progress:
    """``progress(label)``: a tqdm bar of the tasks finished during the stage."""

    def __init__(self, client):
        self.client = client

    def snapshot(self) -> tuple[int, int]:
        from filtershift.pipeline.stages import TaskCounter

        return self.client.run_on_scheduler(_counts, name=TaskCounter.name)

    @contextlib.contextmanager
    def __call__(self, label: str) -> Iterator[None]:
        from tqdm import tqdm

        base_total, base_done = self.snapshot()
        stop = threading.Event()
        bar = tqdm(desc=label, unit="task", total=0, file=sys.stderr, dynamic_ncols=True, leave=True)

        def update():
            try:
                total, done = self.snapshot()
            except Exception:  # the scheduler is going away (Ctrl-C): the bar just stops
                return
            bar.total, bar.n = total - base_total, done - base_done
            bar.refresh()

        def poll():
            while not stop.wait(0.5):
                update()

        thread = threading.Thread(target=poll, name=f"progress-{label}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            update()
            bar.close()

    def close(self) -> None:
        from filtershift.pipeline.stages import TaskCounter

        with contextlib.suppress(Exception):
            self.client.unregister_scheduler_plugin(TaskCounter.name)


def _progress_factory(client):
    """Per-stage task bars, or None when the scheduler cannot load the plugin (an existing
    scheduler without filtershift installed): then the stages show their own bars."""
    from filtershift.pipeline.stages import TaskCounter

    try:
        client.register_plugin(TaskCounter(client.id), name=TaskCounter.name)
    except Exception as exc:  # any failure to install the plugin only costs the bars
        print(f"(no per-stage task bars: {type(exc).__name__}: {exc})", file=sys.stderr)
        return None
    return _Progress(client)
