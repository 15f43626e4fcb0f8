"""Evaluation commands of ``coldstart models`` (registered by models/cli.py through :func:`register`).

``adapt-movielens`` writes the shared MovieLens data into the generic catalog layout
(:mod:`models.catalog`); ``evaluate`` runs the KDD'24 item cold-start protocol on any such catalog
(:mod:`models.evaluate`).
"""

from __future__ import annotations

import logging
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from models.catalog import Catalog, adapt_movielens
from models.derived import thin_catalog


def register(app: typer.Typer) -> None:
    """Add the evaluation commands (``adapt-movielens``, ``thin-catalog``, ``evaluate``) to ``app``."""

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

        report = adapt_movielens(src, out, require_image=require_image, require_plot=require_plot)
        typer.echo(
            f"wrote {report.out_dir}: {report.n_items} items, {report.n_interactions} interactions, "
            f"{report.n_users} users"
        )

    @app.command("thin-catalog")
    def thin_catalog_command(
        src: Annotated[Path, typer.Option(help="Catalog directory to thin.")] = Path(
            ".coldstart/catalogs/movielens"
        ),
        out: Annotated[Path, typer.Option(help="Catalog directory to write.")] = Path(
            ".coldstart/catalogs/movielens_thin"
        ),
        keep: Annotated[float, typer.Option(help="Fraction of the positives kept (0, 1].")] = 0.25,
        threshold: Annotated[float, typer.Option(help="value >= threshold is a positive.")] = 4.0,
        binary: Annotated[bool, typer.Option(help="Kept interactions get value 1 (a purchase log).")] = True,
        seed: Annotated[int, typer.Option(help="Seed of the sample.")] = 0,
    ) -> None:
        """Keep a seeded fraction of a catalog's positives (MovieLens at purchase-log density)."""

        report = thin_catalog(src, out, keep=keep, threshold=threshold, binary=binary, seed=seed)
        typer.echo(
            f"wrote {report.out_dir}: {report.n_items} items, {report.n_interactions} interactions, "
            f"{report.n_users} users"
        )

    @app.command("synthetic-catalog")
    def synthetic_catalog_command(
        planted: Annotated[str, typer.Option(help="The only signal: lexical | image.")],
        out: Annotated[Path, typer.Option(help="Catalog directory to write.")],
        items: Annotated[int, typer.Option(help="Items.")] = 2000,
        users: Annotated[int, typer.Option(help="Users.")] = 600,
        types: Annotated[int, typer.Option(help="Hidden product types.")] = 40,
        seed: Annotated[int, typer.Option(help="Seed of every draw.")] = 0,
    ) -> None:
        """Write a synthetic catalog with one planted signal (lexical or image)."""
        # deferred import: PIL
        from models.synthetic import synthetic_catalog

        if planted not in ("lexical", "image"):
            raise typer.BadParameter("expected lexical or image", param_hint="--planted")
        report = synthetic_catalog(
            out,
            "lexical" if planted == "lexical" else "image",
            n_items=items,
            n_users=users,
            n_types=types,
            seed=seed,
        )
        typer.echo(
            f"wrote {report.out_dir}: {report.n_items} items, {report.n_interactions} interactions, "
            f"{report.n_users} users, {report.n_types} types"
        )

    @app.command("evaluate")
    def evaluate_command(
        catalog: Annotated[
            Path, typer.Option(help="Catalog directory (items.csv, interactions.csv, images).")
        ],
        seeds: Annotated[int, typer.Option(min=1, help="Number of item splits (seeds 0..n-1).")] = 3,
        threshold: Annotated[
            float, typer.Option(help="Interactions with value >= threshold are positives (0 for click logs).")
        ] = 4.0,
        out: Annotated[Path, typer.Option(help="Where the report goes.")] = Path("docs/results"),
        rows: Annotated[str, typer.Option(help="Comma-separated rows (default: all).")] = "",
        dataset: Annotated[
            str, typer.Option(help="Dataset name in the report (default: catalog dir name).")
        ] = "",
        cache_dir: Annotated[Path, typer.Option(help="Frozen-feature cache.")] = Path(
            ".coldstart/cache/features"
        ),
        threads: Annotated[int, typer.Option(min=1, help="torch threads.")] = 2,
        name: Annotated[
            str, typer.Option(help="File stem of the report: NAME.md, NAME.json.")
        ] = "cold_start",
    ) -> None:
        """Item cold-start evaluation (KDD'24 protocol) of every row on any catalog; writes the report."""

        # deferred import: torch
        import torch

        from models.eval_report import write_results
        from models.evaluate import ROWS, evaluate_catalog

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        torch.set_num_threads(threads)
        loaded = Catalog.load(catalog)
        chosen = tuple(r.strip() for r in rows.split(",") if r.strip()) or ROWS
        result = evaluate_catalog(
            loaded,
            seeds=seeds,
            threshold=threshold,
            rows=chosen,
            dataset=dataset or None,
            cache_dir=cache_dir,
        )
        command = "coldstart models " + " ".join(shlex.quote(a) for a in sys.argv[2:])
        write_results(result, out, command=command, stem=name)
        summary = result.summary()
        for row, metrics in summary.items():
            typer.echo(
                f"{row:18s} ndcg@10 {metrics['ndcg@10']:.4f} ± {metrics['ndcg@10_std']:.4f}   "
                f"recall@20 {metrics['recall@20']:.4f} ± {metrics['recall@20_std']:.4f}"
            )
        typer.echo(f"wrote {out / (name + '.md')} and {out / (name + '.json')}")
