"""The console script's entry point: loads the command line, then runs it.

Loading the command line imports torch, scipy and matplotlib (about 5 s on a small machine). A
Ctrl-C in that time would otherwise end in a traceback, or in a C++ abort inside torch's
initialisation; here it is held until the imports are done and then ends the program like a
Ctrl-C during a command: one line, exit 130.
"""

from __future__ import annotations

import signal
import sys


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
        return 130
    return run()
