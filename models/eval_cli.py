"""Evaluation commands of ``coldstart models`` (registered by models/cli.py through :func:`register`).

``adapt-movielens`` writes the shared MovieLens data into the generic catalog layout
(:mod:`models.catalog`); ``evaluate`` runs the KDD'24 item cold-start protocol on any such catalog
(:mod:`models.evaluate`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def register(app: typer.Typer) -> None:
    """Add the evaluation commands (``adapt-movielens``, ``evaluate``) to ``app``."""

    @app.command("adapt-movielens")
    def adapt_movielens_command(
        src: Annotated[Path, typer.Option(help="The shared MovieLens folder.")] = Path(
            "../shared/data/movielens"
        ),
        out: Annotated[Path, typer.Option(help="Catalog directory to write.")] = Path(
            ".coldstart/catalogs/movielens"
        ),
        require_image: Annotated[bool, typer.Option(help="Keep only movies with a poster.")] = True,
        require_plot: Annotated[bool, typer.Option(help="Keep only movies with a plot.")] = True,
    ) -> None:
        """Write ml-latest-small ratings + posters + plots as a generic catalog (images symlinked)."""
        from models.catalog import adapt_movielens

        report = adapt_movielens(src, out, require_image=require_image, require_plot=require_plot)
        typer.echo(
            f"wrote {report.out_dir}: {report.n_items} items, {report.n_interactions} interactions, "
            f"{report.n_users} users"
        )
