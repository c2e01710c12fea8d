"""Quiet shutdowns: Ctrl-C stops a job with one line, not pages of worker tracebacks.

Two things made a Ctrl-C look like a crash, though nothing was wrong and nothing was lost:

- A terminal sends SIGINT to the whole process group, local worker processes included. Each raised
  ``KeyboardInterrupt`` in its event loop and printed a traceback as it died, before the client
  could close the cluster in order. Worker processes now ignore SIGINT: the client, which gets it
  too, stops them.
- Stopping a cluster while a worker is busy makes the worker log each cut it makes: the cancelled
  task, and a heartbeat to the scheduler that met the connection the worker had just closed, with
  a full traceback. :class:`ShutdownNoiseFilter` drops exactly these records, and only once the
  worker is closing; the same errors while it runs are still printed.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import signal
import threading
import weakref

from distributed import WorkerPlugin
from distributed.core import Status

CLOSING = frozenset({Status.closing, Status.closing_gracefully, Status.closed})  # not failed: its errors count


def is_shutdown_noise(record: logging.LogRecord, closing: bool) -> bool:
    """A record about a connection or a task the closing worker cut itself."""
    if not closing or record.levelno >= logging.CRITICAL:
        return False
    exc = record.exc_info[1] if record.exc_info else None
    return isinstance(exc, (OSError, asyncio.CancelledError)) or "CancelledError" in record.getMessage()


class ShutdownNoiseFilter(logging.Filter):
    """Drops a worker's shutdown noise; holds the worker weakly (a worker gone counts as closed)."""

    def __init__(self, worker) -> None:
        super().__init__()
        self._worker = weakref.ref(worker)

    def filter(self, record: logging.LogRecord) -> bool:
        worker = self._worker()
        return not is_shutdown_noise(record, closing=worker is None or worker.status in CLOSING)


class QuietShutdown(WorkerPlugin):
    """In each worker process: SIGINT ignored, and a :class:`ShutdownNoiseFilter` on the handlers
    that print distributed's logs (the ``distributed`` logger does not propagate to the root). A
    worker in the client's own process (``processes=False``) is left alone: it shares the
    client's signals and handlers."""

    name = "filtershift-quiet-shutdown"

    def setup(self, worker) -> None:
        if multiprocessing.parent_process() is None:
            return
        if threading.current_thread() is threading.main_thread():  # where the worker's loop runs
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        for handler in logging.getLogger("distributed").handlers + logging.getLogger().handlers:
            handler.addFilter(ShutdownNoiseFilter(worker))
