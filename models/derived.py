"""Development catalogs derived from a catalog in the generic layout (:mod:`models.catalog`).

:func:`thin_catalog` keeps a seeded fraction of a catalog's positives, optionally as value-1
purchases: MovieLens thinned this way has the density of a sparse purchase log (a few positives per
item), the regime where warm-up evidence is scarce and noisy.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.errors import InvalidInputError
from models.catalog import INTERACTION_COLUMNS, ITEM_COLUMNS, Catalog


@dataclass(frozen=True)
class DerivedReport:
    """What a derivation wrote."""

    out_dir: Path
    n_items: int
    n_interactions: int
    n_users: int


def _write(
    out: Path, items: pd.DataFrame, interactions: pd.DataFrame, images_from: Path | None
) -> DerivedReport:
    out.mkdir(parents=True, exist_ok=True)
    if images_from is not None:
        link = out / "images"
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            raise InvalidInputError("out", str(out), "out/images exists and is not a symlink")
        link.symlink_to(images_from.resolve(), target_is_directory=True)
    items.to_csv(out / "items.csv", index=False, columns=list(ITEM_COLUMNS), quoting=csv.QUOTE_MINIMAL)
    interactions.to_csv(out / "interactions.csv", index=False, columns=list(INTERACTION_COLUMNS))
    return DerivedReport(out, len(items), len(interactions), int(interactions["user_id"].nunique()))


def thin_catalog(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    keep: float,
    threshold: float = 4.0,
    binary: bool = False,
    seed: int = 0,
) -> DerivedReport:
    """Write ``src`` with only a random ``keep`` fraction of its positives (``value >= threshold``).

    Non-positive interactions are dropped. With ``binary`` every kept interaction gets value 1
    (evaluate the result with ``--threshold 1``). Items keep their content whether or not any of
    their interactions survive; images are shared through an ``images`` symlink when ``src`` has one.

    Raises
    ------
    InvalidInputError
        ``keep`` outside (0, 1], or ``src`` is not a valid catalog.
    """
    if not 0.0 < keep <= 1.0:
        raise InvalidInputError("keep", keep, "must be in (0, 1]")
    src_path = Path(src)
    catalog = Catalog.load(src_path, check_images=False)
    positives = catalog.interactions[catalog.interactions["value"] >= threshold]
    rng = np.random.default_rng(seed)
    kept = positives[rng.random(len(positives)) < keep].copy()
    if binary:
        kept["value"] = 1.0
    kept["ts"] = kept["ts"].map(lambda t: t.isoformat())
    items = pd.read_csv(src_path / "items.csv", dtype=str, keep_default_na=False)
    for col in ITEM_COLUMNS:
        if col not in items.columns:
            items[col] = ""
    images = src_path / "images"
    return _write(Path(out), items, kept, images if images.is_symlink() or images.is_dir() else None)
