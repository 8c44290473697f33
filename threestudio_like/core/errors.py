"""The project's error type for problems a user can fix.

The CLI prints ``error: <message>`` for a :class:`UserError` and exits with status 2, without
a traceback. Everything else is a bug and keeps its traceback.
"""

import argparse
import sys
from typing import Callable, NoReturn, Optional, Sequence


class UserError(Exception):
    """Bad input (config key, path, prompt, checkpoint...) that the user can correct.

    The message is one line saying what was wrong and what to do about it.
    """


EXIT_USER_ERROR = 2
"""The exit status of a command stopped by a :class:`UserError`."""


def exit_status(command: Callable[[list[str]], None], argv: Optional[Sequence[str]] = None) -> int:
    """Run ``command`` on ``argv`` (``sys.argv[1:]`` by default) and return its exit status: 0,
    argparse's (``--help``: 0, a usage error: 2), or :data:`EXIT_USER_ERROR` after printing a
    :class:`UserError` as one ``error:`` line on stderr."""
    try:
        command(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as e:  # argparse: --help or a usage error
        return int(e.code or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


class CommandParser(argparse.ArgumentParser):
    """argparse for a subcommand whose usage errors are a :class:`UserError` (one ``error:`` line,
    exit 2) naming the subcommand (the last word of ``prog``), instead of usage + exit."""

    def error(self, message: str) -> NoReturn:
        raise UserError(f"{self.prog.split()[-1]}: {message} (see --help)")
