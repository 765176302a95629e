"""The command groups of `bulkonboard`, and the one place where a failure becomes one line and an exit code.

Every failure that stops a command, whatever raised it (click's argument checks, a `BulkOnboardError` from any
stage, Ctrl-C, a bug), reaches `one_line`: one line on stderr, in the command's log format, and the contract's
exit code, never a traceback (set BULKONBOARD_DEBUG=1 to see one for a bug). Commands only raise or return their
exit code; none catches.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

from ..errors import EXIT_INTERRUPTED, EXIT_OWN_FAILURE, BulkOnboardError
from .console import Output


class Session:
    """What the error path needs to know of the command under way: how it prints (text or JSON, quiet or not).

    Handed down as click's `ctx.obj`; a command sets `output` once it has read its output options."""

    def __init__(self) -> None:
        self.output: Output | None = None


def one_line(failure: BaseException, output: Output | None) -> int:
    """THE error path: the line for `failure`, shown through the command's output, and its exit code.

    A bug is exit 4 (bulkonboard's own failure), never 1 ("rows to fix"), and shows only the first line of its
    text, so the one-line promise holds whatever it says."""
    if isinstance(failure, click.UsageError):
        command = failure.ctx.command_path if failure.ctx else "bulkonboard"
        line, code = f"{failure.format_message()} (see `{command} --help`)", failure.exit_code
    elif isinstance(failure, click.ClickException):
        line, code = failure.format_message(), failure.exit_code
    elif isinstance(failure, BulkOnboardError):
        line, code = failure.message, failure.exit_code
    elif isinstance(failure, KeyboardInterrupt | click.exceptions.Abort):
        line, code = "interrupted", EXIT_INTERRUPTED
    elif isinstance(failure, Exception):
        if os.environ.get("BULKONBOARD_DEBUG"):
            raise failure
        line, code = unexpected_error_line(failure), EXIT_OWN_FAILURE
    else:  # SystemExit and the like: not a failure of ours to describe
        raise failure
    (output or Output()).error(line)
    return code


def unexpected_error_line(exc: BaseException) -> str:
    """The one line for a bug: exit 4 says "bulkonboard's own failure", and what the service did is in the journal.
    Only the first line of the exception's text, so that the one-line promise holds whatever it says."""
    text = str(exc).strip().splitlines()
    detail = f": {text[0]}" if text else ""
    return (
        f"unexpected {type(exc).__name__}{detail} (a bug in bulkonboard: what the service did is in the journal; "
        "set BULKONBOARD_DEBUG=1 for details)"
    )


def session_output(output: Output) -> Output:
    """Tell the error path how the command under way prints; returns `output` for the command to use."""
    context = click.get_current_context(silent=True)
    if context is not None and isinstance(context.obj, Session):
        context.obj.output = output
    return output


class CommandGroup(click.Group):
    """A group whose commands share the one error path: bad arguments get one line and exit 2, like every other
    unusable input (the contract), instead of click's usage block; `--help` still shows the whole usage.

    Commands named in `lazy_commands` are imported only when named (or listed by `--help`): `sandbox`, `auth` and
    `journal` bring the emulator's server, MSAL and its HTTP stack, which a nightly `run` with a token never needs
    (a tenth of a second of every start)."""

    #: name -> (module, attribute)
    lazy_commands: dict[str, tuple[str, str]] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_commands and cmd_name not in self.commands:
            module, attribute = self.lazy_commands[cmd_name]
            command: click.Command = getattr(importlib.import_module(module), attribute)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command, then exit with its code. Click's own failures (arguments, Ctrl-C while parsing)
        come out of click's `main` and go to `one_line` here."""
        session = Session()
        kwargs["standalone_mode"] = False
        kwargs.setdefault("obj", session)
        try:
            code = super().main(*args, **kwargs)
        except click.exceptions.NoArgsIsHelpError as asked_nothing:
            # A bare `bulkonboard` (or `bulkonboard journal`) asks what there is: the help, on stdout, exit 0, as
            # sqlite-utils and git's subcommands answer, not "error: Usage: ..." with exit 2.
            click.echo(asked_nothing.ctx.get_help())
            code = 0
        except Exception as failure:  # click's own (UsageError, Abort): the commands' failures never get here
            code = one_line(failure, session.output)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        """The commands' failures go to `one_line` here, before click's `main` would turn Ctrl-C into an Abort
        (and an empty line) or a broken pipe into exit 1."""
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise  # click's own: to `main`, which hands them to `one_line`
        except (Exception, KeyboardInterrupt) as failure:
            session = ctx.obj if isinstance(ctx.obj, Session) else None
            return one_line(failure, session.output if session else None)
