"""`coldstart api ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("serve")
def serve(
    host: str | None = typer.Option(None, help="Bind address (default: settings.api.host)."),
    port: int | None = typer.Option(None, help="Port (default: settings.api.port)."),
    workers: int | None = typer.Option(
        None, help="uvicorn worker processes (default: settings.api.workers)."
    ),
    log_level: str = typer.Option("info"),
) -> None:
    """Run the HTTP API with uvicorn (OpenAPI docs at /docs)."""
    import uvicorn

    from coldstart.settings import get_settings

    settings = get_settings()
    uvicorn.run(
        "api.main:create_app",
        factory=True,
        host=host or settings.api.host,
        port=port if port is not None else settings.api.port,
        workers=workers or settings.api.workers,
        log_level=log_level,
        access_log=False,
    )
