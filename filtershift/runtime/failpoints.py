"""Named points where a test can make the process die, to prove that a run killed there recovers.

Inactive unless ``FILTERSHIFT_FAILPOINT`` names the point; the fault-injection tests set it for a
subprocess. ``FILTERSHIFT_FAILPOINT_ACTION`` is ``kill-group`` (SIGKILL to the whole process group:
the command, its cluster and workers — a power cut), ``exit`` (this process only: a worker dying)
or ``stop`` (SIGSTOP to this process: it pauses there until the test sends SIGCONT, so a test can
act while the process is at a known point, without timing).
With ``FILTERSHIFT_FAILPOINT_ONCE=FILE`` the point fires once, then creates FILE and stays quiet.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("FILTERSHIFT_FAILPOINT") != name:
        return
    once = os.environ.get("FILTERSHIFT_FAILPOINT_ONCE")
    if once:
        try:
            fd = os.open(once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
    action = os.environ.get("FILTERSHIFT_FAILPOINT_ACTION", "kill-group")
    if action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    if action == "exit":
        os._exit(137)
    os.killpg(os.getpgrp(), signal.SIGKILL)
