"""Headless command-line surface (see the CLI contract in the README)."""
