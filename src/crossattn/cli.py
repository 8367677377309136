"""``crossattn``: the command-line front. Each sub-command is a module of ``crossattn/commands/``
that declares its parser (``add_parser(sub)``) and does its work (``run(args)``); the flags several
commands share are declared once in :mod:`crossattn.commands.flags`. The command modules import
nothing heavy at module level, so ``crossattn --help`` never imports torch or diffusers."""

from __future__ import annotations

import argparse
import sys
import warnings

from .commands import edit, export, finetune, generate, maps, serve, train, train_clip
from .commands import eval as evaluate

PROG = "crossattn"
#: the sub-commands, in the order ``crossattn --help`` lists them
COMMANDS = (generate, maps, edit, evaluate, export, train, train_clip, finetune, serve)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``crossattn: error: ...``), exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Text-to-image diffusion that makes cross-attention visible.")
    from . import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run_command=command.run)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    sys.stderr.write(f"{PROG}: warning: {message}\n")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run_command"):
        parser.print_help()
        return 2
    warnings.showwarning = _one_line_warning
    try:
        return args.run_command(args) or 0
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        sys.stderr.write(f"{PROG}: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
