"""Datasets: procedural scenes with exact masks, and user image folders."""
