"""``coldstart store ...``: create the configured feature store, print its Feast env."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated, Literal

import typer

from coldstart.settings import get_settings
from feature_repo import open_store
from feature_repo.config import EmbeddedStoreConfig, FeastSettings, ProductionStoreConfig
from feature_repo.seed_users import seed_users_from_artifact
from models.artifact import resolve_artifact

app = typer.Typer(no_args_is_help=True)

REPO_DIR = Path(__file__).resolve().parent


def feast_cli_env(store_type: Literal["embedded", "production"] | None = None) -> dict[str, str]:
    """Environment for running the ``feast`` CLI in ``feature_repo/`` on the configured store (or on
    the store of ``store_type``: that type's defaults, the configured project)."""
    # deferred import: SQLAlchemy
    from sqlalchemy.engine import make_url

    settings = get_settings()
    feast: FeastSettings = settings.feast
    if store_type is not None and store_type != feast.type:
        # the other store with its defaults; the project and the registry cache stay the configured ones
        common = feast.model_dump(include={"project", "registry_cache_ttl_s"})
        feast = EmbeddedStoreConfig(**common) if store_type == "embedded" else ProductionStoreConfig(**common)
    env: dict[str, str] = {"COLDSTART_FEAST__TYPE": feast.type}
    if isinstance(feast, EmbeddedStoreConfig):
        return env
    env["COLDSTART_FEAST__PG_SCHEMA"] = feast.pg_schema
    pg = make_url(feast.postgres_url)
    env.update(
        {
            "FEAST_FS_YAML_FILE_PATH": str(REPO_DIR / "feature_store.production.yaml"),
            "CS_FEAST_PROJECT": feast.project,
            "CS_FEAST_REGISTRY_URL": feast.registry_url or feast.postgres_url,
            "CS_FEAST_REDIS": feast.feast_redis_connection_string(),
            "CS_FEAST_PG_HOST": pg.host or "127.0.0.1",
            "CS_FEAST_PG_PORT": str(pg.port or 5432),
            "CS_FEAST_PG_DATABASE": pg.database or "postgres",
            "CS_FEAST_PG_SCHEMA": feast.pg_schema,
            "CS_FEAST_PG_USER": pg.username or "postgres",
            "CS_FEAST_PG_PASSWORD": pg.password or "",
            "CS_FEAST_PG_SSLMODE": str(pg.query.get("sslmode", "disable")),
        }
    )
    return env


@app.command("env")
def env_command(
    store_type: Annotated[
        str | None,
        typer.Option("--type", help="embedded | production (default: COLDSTART_FEAST__TYPE)"),
    ] = None,
) -> None:
    """Print `export` lines that point the `feast` CLI (run in feature_repo/) at the configured store."""
    if store_type not in (None, "embedded", "production"):
        raise typer.BadParameter(f"--type={store_type!r}: must be embedded or production")
    for k, v in feast_cli_env(store_type).items():  # type: ignore[arg-type]
        typer.echo(f"export {k}={shlex.quote(v)}")


@app.command("apply")
def apply_command() -> None:
    """Create the offline tables / files and register the Feast objects of the configured store."""

    settings = get_settings()
    store = open_store(settings)
    try:
        typer.echo(
            f"feature store ready: type={settings.feast.type} project={settings.feast.project} "
            f"views={[v.name for v in store.feast.list_feature_views()]}"
        )
    finally:
        store.close()


@app.command("seed-users")
def seed_users_command(
    artifact: Annotated[
        Path | None,
        typer.Option(
            help="Artifact dir holding users.npz (default: settings models.artifact, else the newest)."
        ),
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Also replace users that already have a vector.")] = False,
) -> None:
    """Write an encoder artifact's learned user vectors to the store (users known at training time)."""

    settings = get_settings()
    path = resolve_artifact(artifact or settings.models.artifact, settings.models.artifacts_dir)
    store = open_store(settings)
    try:
        n = seed_users_from_artifact(store.users(), path, overwrite=overwrite)
    finally:
        store.close()
    typer.echo(f"wrote {n} user vectors from {path.name}")
