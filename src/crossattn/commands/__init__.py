"""One module per CLI sub-command; each has ``run(args) -> int``. Imported lazily by ``cli.py``."""
