"""The one exception family: every failure a user can cause raises a :class:`CrossattnError`.

Each class keeps the built-in base a Python user already catches (``ValueError`` for a bad value,
``FileNotFoundError`` for a missing file, ``FileExistsError`` for a file that would be overwritten,
``RuntimeError`` for misuse of hooks and for a run that failed), so ``except ValueError`` still works
while ``except crossattn.errors.CrossattnError`` catches them all. Messages name the bad value, what is
accepted and, for files, the file and the part of it.

The CLI maps them to exit codes (:data:`EXIT_BAD_INPUT` for bad input, :data:`EXIT_RUN_FAILED` for a
run that failed); anything else reaching the CLI is a bug and is reported as one.
"""

from __future__ import annotations

__all__ = [
    "CrossattnError",
    "BadArgument",
    "BadImage",
    "BadModelFolder",
    "BadDataset",
    "RunFolderError",
    "MissingFile",
    "OutputExists",
    "HookError",
    "RunFailed",
    "EXIT_BAD_INPUT",
    "EXIT_RUN_FAILED",
    "EXIT_INTERRUPTED",
    "exit_code",
]

EXIT_RUN_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


class CrossattnError(Exception):
    """Base of every error crossattn raises on purpose."""


class BadArgument(CrossattnError, ValueError):
    """A value outside what is accepted: a number out of range, an unknown name, an empty prompt."""


class BadImage(CrossattnError, ValueError):
    """An image file that cannot be used: unreadable, truncated, too large, an unsupported mode."""


class BadModelFolder(CrossattnError, ValueError):
    """A model, LoRA or checkpoint folder with a missing or broken part (the part is named)."""


class BadDataset(CrossattnError, ValueError):
    """A training data folder with a missing or broken part (the file or row is named)."""


class RunFolderError(CrossattnError, ValueError):
    """A training run folder that cannot be started, resumed or written as asked."""


class MissingFile(CrossattnError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class OutputExists(CrossattnError, FileExistsError):
    """Writing would replace a user's file; ``overwrite`` was not given."""


class HookError(CrossattnError, RuntimeError):
    """Attention processors or hooks used wrongly (installed twice, used outside their context)."""


class RunFailed(CrossattnError, RuntimeError):
    """The input was fine but the run could not finish (out of memory, a loss that became NaN)."""


def exit_code(error: BaseException) -> int | None:
    """The CLI's exit code for ``error``, or None when it is not a user-facing error (a bug)."""
    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, RunFailed):
        return EXIT_RUN_FAILED
    if isinstance(error, (CrossattnError, ValueError, FileNotFoundError, FileExistsError)):
        return EXIT_BAD_INPUT
    return None
