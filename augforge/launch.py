"""The console script's entry point: loads the command line, then runs it.

Loading the command line imports torch, scipy and matplotlib (about 5 s on a small machine). A
Ctrl-C in that time would otherwise end in a traceback, or in a C++ abort inside torch's
initialisation; here it is held until the imports are done and then ends the program like a
Ctrl-C during a command: one line, exit 130.

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
from typing import NoReturn


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
            signal.signal(signal.SIGINT, previous)
        if held:
            raise KeyboardInterrupt
    except KeyboardInterrupt:  # also one caught by the C handler but run after the restore
        sys.stderr.write("interrupted\n")
        _leave_interrupted()
    code = run()
    if code == 130:  # the command was interrupted and has said so
        _leave_interrupted()
    return code
