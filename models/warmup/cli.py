"""``coldstart models evaluate-warmup`` (registered by models/cli.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

import typer

from models.catalog import Catalog


def register(app: typer.Typer) -> None:
    """Add the warm-up evaluation command to ``app``."""

    @app.command("evaluate-warmup")
    def evaluate_warmup_command(
        catalog: Annotated[
            Path, typer.Option(help="Catalog in the generic layout (items.csv, interactions.csv, images).")
        ] = Path(".coldstart/catalogs/movielens"),
        seeds: Annotated[int, typer.Option(min=1, help="Number of item splits (mean ± std).")] = 3,
        threshold: Annotated[float, typer.Option(help="value >= threshold is a positive.")] = 4.0,
        out: Annotated[Path, typer.Option(help="Where <name>.json / <name>.md go.")] = Path("docs/results"),
        name: Annotated[str, typer.Option(help="File stem of the report.")] = "warmup",
    ) -> None:
        """Rank held-out items after their first k = 0, 1, 5, 20 positives: content / behaviour / blended."""
        # deferred import: torch
        from models.warmup.evaluate import evaluate_warmup
        from models.warmup.report import write_results

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        result = evaluate_warmup(Catalog.load(catalog), seeds=seeds, threshold=threshold)
        json_path, md_path = write_results(result, out, stem=name)
        typer.echo(json.dumps(result["rows"], indent=2))
        typer.echo(f"wrote {json_path} and {md_path}")
