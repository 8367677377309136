"""``python -m crossattn`` (also what ``accelerate launch -m crossattn`` runs): the ``crossattn`` command, with its
fast exit (:func:`crossattn.cli.console_main`)."""

import sys

from .cli import console_main

sys.exit(console_main())
