"""The console script's entry point: loads the command line, then runs it.

Loading the command line imports torch, scipy and matplotlib (about 5 s on a small machine). A
Ctrl-C in that time would otherwise end in a traceback, or in a C++ abort inside torch's
initialisation; here it is held until the imports are done and then ends the program like a
Ctrl-C during a command: one line, exit 130.

While the command runs, a Ctrl-C that lands in Python code of torch's is raised a moment later (at
most a second), in other code: torch calls some Python functions from C++, and a KeyboardInterrupt raised inside one
cannot unwind through C++ (``terminate called after throwing ... KeyboardInterrupt``, exit -6; seen
in a fresh clone's test run).

After a Ctrl-C the process leaves at once (``os._exit``) instead of through the interpreter's
shutdown: under load, about one run in twelve was ended by SIGINT after its exit handlers had run
(exit status -2 instead of 130) when the interrupt had reached code that torch called. By then the
command has closed everything it wrote (every file is written in a ``with`` block, and executors
shut their workers down in ``finally``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from types import FrameType
from typing import NoReturn

_TORCH = os.sep + "torch" + os.sep


#: How many times in a row a Ctrl-C may be put off (x 50 ms): a loop that spends nearly all its time
#: in torch must still stop within a second.
_MAX_DEFERRALS = 20
_deferred = [0]


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGINT while a command runs: KeyboardInterrupt, unless torch's Python code is running (it may
    have been called from C++); then the signal is sent again 50 ms later, up to a second."""
    if frame is not None and _TORCH in frame.f_code.co_filename and _deferred[0] < _MAX_DEFERRALS:
        _deferred[0] += 1
        timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
        timer.daemon = True
        timer.start()
        return
    _deferred[0] = 0
    raise KeyboardInterrupt


def _leave_interrupted() -> NoReturn:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while leaving changes nothing
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed or broken pipe: nothing more to say
            stream.flush()
    os._exit(130)


def main() -> int:
    held: list[int] = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
        try:
            from augforge.cli import main as run
        finally:
            signal.signal(signal.SIGINT, _interrupt if previous is signal.default_int_handler else previous)
        if held:
            raise KeyboardInterrupt
    except KeyboardInterrupt:  # also one caught by the C handler but run after the restore
        sys.stderr.write("interrupted\n")
        _leave_interrupted()
    code = run()
    if code == 130:  # the command was interrupted and has said so
        _leave_interrupted()
    return code
