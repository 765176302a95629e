"""The `bulkonboard` program as the system starts it: the CLI, then an exit that skips tearing the interpreter down.

Why: once a command has returned, every file, journal and socket it opened is closed; what is left is freeing each
object one by one (the sheet's frame, pandas, aiohttp), which took ~0.1 s after a 20,000-row run, paid on every
start of a scheduler's command and in every benchmark. Python still joins the threads and runs the atexit
handlers registered after ours (the installed program registers it before importing the CLI, so that is all of
them but logging's; `python -m bulkonboard.cli.commands`, as the tests run it, registers it after); logging's flush is
called here in any case. Tests that call the click command in-process (CliRunner) never come through here.

`BULKONBOARD_NO_FAST_EXIT=1` turns the fast exit off: the interpreter then ends as usual, so whatever registered
an atexit handler before us runs too (coverage measuring a subprocess does, to write its data). The exit code is
the same either way (a Ctrl-C while starting is 130 in both).

Kept apart from `cli` so that registering comes before the CLI's imports.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from ..errors import EXIT_INTERRUPTED  # a module of constants and exception classes: nothing is registered

#: Set (to anything but "" or "0") to end the interpreter as usual instead of skipping its teardown.
NO_FAST_EXIT = "BULKONBOARD_NO_FAST_EXIT"


def entry(main: Callable[[], Any] | None = None) -> None:
    outcome = {"code": 1}  # an exception that is not SystemExit: Python prints it and exits 1
    fast = os.environ.get(NO_FAST_EXIT, "") in ("", "0")
    if fast:
        atexit.register(_exit_now, outcome)
    try:
        if main is None:  # inside the `try`: a Ctrl-C while the CLI is still being imported also exits 130
            from .commands import main as cli_main

            main = cli_main
        main()
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            outcome["code"] = exc.code or 0
        raise  # anything else (a message) Python prints, then exits 1
    except KeyboardInterrupt:
        outcome["code"] = EXIT_INTERRUPTED
        if not fast:  # Python would end by SIGINT itself (-2 to a parent), not by the code the fast exit gives
            raise SystemExit(EXIT_INTERRUPTED) from None
        raise
    outcome["code"] = 0


def _exit_now(outcome: dict[str, int]) -> None:
    logging.shutdown()  # idempotent; logging registers it at import, before ours, so it would run after os._exit
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can reach it anyway
            pass
    os._exit(outcome["code"])
