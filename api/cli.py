"""`coldstart api ...` commands."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from coldstart.settings import get_settings

app = typer.Typer(no_args_is_help=True)


class Balance(StrEnum):
    """How ``coldstart api serve`` spreads connections over its workers (see ``api.serve``)."""

    round_robin = "round_robin"
    shared_socket = "shared_socket"


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings.api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings.api.port).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="uvicorn worker processes (default: settings.api.workers).")
    ] = None,
    balance: Annotated[
        Balance | None,
        typer.Option(
            help="With several workers: round_robin (connections handed out by the parent) or "
            "shared_socket (uvicorn's own mode). Default: settings.api.balance."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Run the HTTP API with uvicorn (OpenAPI docs at /docs)."""
    # deferred import: uvicorn
    from api.serve import serve as run_server

    settings = get_settings()
    code = run_server(
        host=host or settings.api.host,
        port=port if port is not None else settings.api.port,
        workers=workers or settings.api.workers,
        balance=balance.value if balance is not None else settings.api.balance,  # type: ignore[arg-type]
        log_level=log_level,
    )
    if code:
        raise typer.Exit(code)
