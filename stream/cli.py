"""`coldstart stream ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


def broker_command() -> None:
    """Run the embedded broker until interrupted (implemented in stream/broker.py)."""
    raise NotImplementedError
