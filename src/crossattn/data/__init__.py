"""Training and evaluation data: procedural scenes and their caption grammar."""
