"""`coldstart exploration ...` commands."""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True)


@app.command("versions")
def versions_command() -> None:
    """List the policy checkpoints of the model store (newest last) and the one replicas serve."""
    import json

    from coldstart.settings import get_settings
    from exploration.model_store import LocalModelStore

    settings = get_settings()
    store = LocalModelStore(settings.exploration.model_store_dir or settings.data_dir / "model_store")
    latest = store.latest()
    for version in store.versions():
        cp, data = store.read(version)
        row = {
            "version": cp.version,
            "created_at": cp.created_at.isoformat(),
            "policy": cp.config.get("type"),
            "n_learned": cp.n_learned,
            "bytes": len(data),
            "latest": latest is not None and latest.version == version,
        }
        typer.echo(json.dumps(row))
