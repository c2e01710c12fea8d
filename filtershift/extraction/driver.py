"""Hands out the read and write tasks of an extraction and places each checkpoint in manifest order.

On a distributed cluster the client keeps a window of reads in flight (two per worker thread, so a
worker holds at most a few checkpoints' kernels), places each summary as soon as every earlier one
is in (:class:`.ledger.Ledger`), grows the store to the rows placed, and submits the checkpoint's
write, which runs where its kernels are. A read that raises, or whose worker dies, fails alone
as that checkpoint's result; a failed write stops the run (the rows it was given are the store's
fault, not the checkpoint's), and a rerun resumes. Without a cluster the same steps run in turn.
"""

from __future__ import annotations

from collections.abc import Callable

from filtershift import store
from filtershift.extraction.ledger import Ledger
from filtershift.extraction.manifest import Entry
from filtershift.extraction.staging import Staged, WriteTarget, one_line, read_checkpoint, summary_of, write_checkpoint
from filtershift.runtime.progress import ProgressCounter, current_client

READS_PER_THREAD = 2


def task_key(entry: Entry, prefix: str = "extract") -> str:
    """A readable, unique dask key: ``extract-<name>-<row>`` (the dashboard groups by prefix)."""
    safe = "".join(c if c.isalnum() or c in "._" else "_" for c in entry.name)[:80]
    return f"{prefix}-{safe}-{entry.row}"


def failed_task(error: BaseException) -> Staged:
    if store.is_storage_error(error):  # the target, not the checkpoint, is at fault: stop
        raise error
    return Staged(sha256="", status="failed", error=f"task failed: {type(error).__name__}: {one_line(error)}")


def read_and_write(entries: list[Entry], ledger: Ledger, grow: Callable[[int], None], target: WriteTarget,
                   show: bool = True) -> list[Staged]:
    """Read, place and write every entry into ``target``; returns each one's final summary, in
    manifest order."""
    client = current_client()
    with ProgressCounter(len(entries), "extract", show) as bar:
        if client is None:
            return [_one_by_one(e, ledger, grow, target, bar) for e in entries]
        return _on_cluster(client, entries, ledger, grow, target, bar)


def _one_by_one(entry: Entry, ledger: Ledger, grow, target: WriteTarget, bar: ProgressCounter) -> Staged:
    try:
        checkpoint = read_checkpoint(entry, target.staging_root)
    except Exception as exc:  # noqa: BLE001 — as a failed task on a cluster
        staged, placement = ledger.place(entry, failed_task(exc))
    else:
        staged, placement = ledger.place(entry, checkpoint.staged)
    if placement is not None:
        grow(ledger.stop)
        staged = write_checkpoint(checkpoint, entry, placement, *target)
    bar.update(failed=staged.status == "failed")
    return staged


def _on_cluster(client, entries: list[Entry], ledger: Ledger, grow, target: WriteTarget, bar: ProgressCounter) -> list[Staged]:
    from distributed import as_completed

    results: list[Staged | None] = [None] * len(entries)
    reads, summaries, role = {}, {}, {}
    pending = as_completed()
    submitted = placed = 0

    def submit_reads() -> None:
        nonlocal submitted
        if submitted == len(entries):
            return
        window = max(2, READS_PER_THREAD * sum(client.nthreads().values()))  # workers may come and go (SLURM)
        while submitted < len(entries) and len(reads) < window:
            entry = entries[submitted]
            reads[submitted] = client.submit(read_checkpoint, entry, target.staging_root, key=task_key(entry), pure=False)
            summary = client.submit(summary_of, reads[submitted], key=task_key(entry, "summary"), pure=False)
            role[summary.key] = ("summary", submitted)
            pending.add(summary)
            submitted += 1

    def done(i: int, staged: Staged) -> None:
        results[i] = staged
        reads.pop(i, None)  # releases the kernels on the worker
        bar.update(failed=staged.status == "failed")

    submit_reads()
    for future in pending:
        kind, i = role.pop(future.key)
        if kind == "summary":
            try:
                summaries[i] = future.result()
            except Exception as exc:  # noqa: BLE001 — includes KilledWorker for a read that crashed its workers
                summaries[i] = failed_task(exc)
            while placed in summaries:
                staged, placement = ledger.place(entries[placed], summaries.pop(placed))
                if placement is None:
                    done(placed, staged)
                else:
                    grow(ledger.stop)
                    write = client.submit(write_checkpoint, reads[placed], entries[placed], placement, *target,
                                          key=task_key(entries[placed], "write"), pure=False)
                    role[write.key] = ("write", placed)
                    pending.add(write)
                placed += 1
        else:
            done(i, future.result())  # a failed write raises: see the module
        submit_reads()
    return results
