"""Which worker log records a shutdown drops (the end-to-end Ctrl-C test is in test_cluster.py)."""

from __future__ import annotations

import asyncio
import logging
import sys

import pytest
from distributed.comm.core import CommClosedError

from filtershift.runtime.quiet_shutdown import is_shutdown_noise


def record(level: int, message: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc else None
    return logging.LogRecord("distributed.worker", level, __file__, 1, message, (), exc_info)


HEARTBEAT = record(logging.ERROR, "Failed to communicate with scheduler during heartbeat.", CommClosedError("Stream is closed"))
CANCELLED = record(logging.WARNING, "Async instruction for <Task cancelled name=\"execute('x')\"> ended with CancelledError")
CANCELLED_EXC = record(logging.ERROR, "task", asyncio.CancelledError())


@pytest.mark.parametrize("noise", [HEARTBEAT, CANCELLED, CANCELLED_EXC])
def test_the_cuts_a_closing_worker_makes_are_dropped_only_while_it_closes(noise):
    assert is_shutdown_noise(noise, closing=True)
    assert not is_shutdown_noise(noise, closing=False), "a running worker's connection errors must stay visible"


def test_other_records_of_a_closing_worker_are_kept():
    try:
        raise ValueError("a bug")
    except ValueError:
        failure = logging.LogRecord("distributed.worker", logging.ERROR, __file__, 1, "Compute Failed", (), sys.exc_info())
    assert not is_shutdown_noise(failure, closing=True)
    assert not is_shutdown_noise(record(logging.INFO, "Stopping worker at tcp://127.0.0.1:1"), closing=True)
    assert not is_shutdown_noise(record(logging.CRITICAL, "fatal", CommClosedError("x")), closing=True)
