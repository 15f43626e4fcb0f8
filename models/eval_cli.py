"""Evaluation commands of ``coldstart models`` (owned by the evaluation work; registered by models/cli.py)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the evaluation commands (evaluate, adapt-movielens, ...) to ``app``."""
