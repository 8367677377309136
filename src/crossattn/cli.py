"""``crossattn``: the command-line front. Each sub-command is a module of ``crossattn/commands/``
that declares its parser (``add_parser(sub)``) and does its work (``run(args)``); the flags several
commands share are declared once in :mod:`crossattn.commands.flags`. The command modules import
nothing heavy at module level, so ``crossattn --help`` never imports torch or diffusers.

The error contract (:mod:`crossattn.errors`): one line ``crossattn: error: ...`` and exit code 2 for
bad input, 1 for a run that failed, 130 for Ctrl-C; any other exception is a bug, reported in one
line that names the file holding its traceback. ``--debug`` (or ``CROSSATTN_DEBUG=1``) re-raises
instead, traceback and all.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings

from .commands import edit, export, finetune, generate, maps, serve, train, train_clip
from .commands import eval as evaluate
from .errors import EXIT_INTERRUPTED, EXIT_RUN_FAILED, exit_code

PROG = "crossattn"
#: the sub-commands, in the order ``crossattn --help`` lists them
COMMANDS = (generate, maps, edit, evaluate, export, train, train_clip, finetune, serve)
#: ``CROSSATTN_DEBUG=1`` does what ``--debug`` does
DEBUG_ENV = "CROSSATTN_DEBUG"


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``crossattn: error: ...``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Text-to-image diffusion that makes cross-attention visible.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"let errors raise with their traceback instead of one line (also: {DEBUG_ENV}=1)",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run_command=command.run)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(f"{PROG}: warning: {message}\n")


def one_line(error: BaseException) -> str:
    """The error's message on one line (a multi-line message joined with ``; ``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or type(error).__name__


def write_traceback(error: BaseException, argv: list[str]) -> str:
    """The command line and the traceback of ``error`` in a new file of the temp folder (written whole or
    not at all); its path."""
    from .files import atomic_write_text

    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = os.path.join(tempfile.gettempdir(), f"{PROG}-traceback-{stamp}-{os.getpid()}.txt")
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return str(atomic_write_text(path, f"{PROG} {' '.join(argv)}\n\n{text}"))


def report(error: BaseException, argv: list[str]) -> int:
    """One line on stderr for ``error``; the exit code (see :func:`crossattn.errors.exit_code`)."""
    code = exit_code(error)
    if code == EXIT_INTERRUPTED:
        sys.stderr.write(f"{PROG}: interrupted\n")
    elif code is not None:
        sys.stderr.write(f"{PROG}: error: {one_line(error)}\n")
    else:
        try:
            where = f"the traceback is in {write_traceback(error, argv)}"
        except OSError as err:
            where = f"its traceback could not be written ({one_line(err)}); rerun with --debug to see it"
        sys.stderr.write(
            f"{PROG}: error: internal error, a bug in {PROG}: {type(error).__name__}: {one_line(error)}; "
            f"{where} (please report it)\n"
        )
        code = EXIT_RUN_FAILED
    return code


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run_command"):
        parser.print_help()
        return 2
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    warnings.showwarning = _one_line_warning
    try:
        return args.run_command(args) or 0
    except (Exception, KeyboardInterrupt) as error:
        if debug:
            raise
        return report(error, argv)


def console_main() -> int:
    """The ``crossattn`` command and ``python -m crossattn``: :func:`main`, then the run's own garbage collected and
    every object still alive (torch, diffusers, transformers and their modules) frozen out of the garbage collector
    (``gc.freeze``), so the interpreter's shutdown skips repeated collections over them: ~1 s of CPU a process (a
    2-step ``train``: ~5.9 -> ~5.0 s). Finalisation itself (atexit handlers, module teardown, flushing) runs as
    before."""
    import gc

    code = main()
    gc.collect()  # what the command left unreachable is freed (and finalised) now, as it would be at shutdown
    gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(console_main())
