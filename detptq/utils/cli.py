"""Top-level error handling of the tools: expected errors become one sentence, bugs keep their traceback.

    from detptq.utils.cli import UserInputError, run_tool

    def main() -> None:
        ...
        raise UserInputError(f'{path}: not a COCO annotation file')

    if __name__ == '__main__':
        run_tool(main)

An expected error (a bad file, key or value the user can fix) prints
``tool.py: error: <sentence>`` to stderr and exits with status 2, as argparse
does for a bad argument. Any other exception is a bug: its traceback stays.
"""
from __future__ import annotations

import os
import sys
from typing import Callable, Optional

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


class UserInputError(Exception):
    """A problem with the user's input, described in one sentence naming the file, key or value."""


def expected_error_types() -> tuple:
    """Exception types that describe bad input rather than a bug."""
    types: list = [UserInputError]
    try:  # the checkpoint loader's own error names the file and what is wrong with it
        from detptq.utils.checkpoint import CheckpointError
        types.append(CheckpointError)
    except ImportError:  # pragma: no cover - torch missing: nothing to add
        pass
    return tuple(types)


def error_exit(name: str, message: str, code: int = EXIT_USER_ERROR) -> None:
    """Print ``name: error: message`` to stderr and exit with ``code``."""
    print(f'{name}: error: {message}', file=sys.stderr)
    sys.exit(code)


def run_tool(main: Callable[[], Optional[int]], name: Optional[str] = None) -> None:
    """Run a tool's ``main()`` and exit with its status; expected errors print one sentence."""
    name = name or os.path.basename(sys.argv[0])
    try:
        code = main()
    except KeyboardInterrupt:
        error_exit(name, 'interrupted', EXIT_INTERRUPTED)
    except SystemExit as err:
        if isinstance(err.code, str):  # raise SystemExit('sentence') in older code paths
            error_exit(name, err.code)
        raise
    except Exception as err:  # noqa: BLE001 - re-raised below unless expected
        if isinstance(err, expected_error_types()):
            error_exit(name, str(err))
        raise
    sys.exit(code or 0)
