"""``python -m crossattn`` (also what ``accelerate launch -m crossattn`` runs)."""

import sys

from .cli import main

sys.exit(main())
