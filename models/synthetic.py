"""Synthetic development catalogs with one planted signal, in the generic layout (:mod:`models.catalog`).

Each item belongs to one hidden product type; each user buys within one or two types (value 1, a
purchase log). Only one channel tells the types apart:

- ``lexical``: the title names the type with a made-up type word (plus made-up modifier words); the
  description is filler drawn from one shared pool and the image is noise, so neither says anything.
  A sparse word model sees the type word exactly; a sentence embedding sees an unknown sub-word blur.
- ``image``: the image shows the type (a colour and a stripe direction per type, with jitter); title
  and description are filler from one shared pool.

A representation that picks the right channel ranks a user's unseen items of the user's types first.
Everything is drawn from one seeded generator, so a catalog is reproducible from its command.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from PIL import Image

from coldstart.errors import InvalidInputError
from models.catalog import INTERACTION_COLUMNS, ITEM_COLUMNS

Planted = Literal["lexical", "image"]
_CONSONANTS = "bcdfghjklmnprstvz"
_VOWELS = "aeiou"
IMAGE_SIZE = 64


@dataclass(frozen=True)
class SyntheticReport:
    """What :func:`synthetic_catalog` wrote."""

    out_dir: Path
    n_items: int
    n_interactions: int
    n_users: int
    n_types: int


def _words(rng: np.random.Generator, n: int, syllables: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add(
            "".join(
                _CONSONANTS[rng.integers(len(_CONSONANTS))] + _VOWELS[rng.integers(len(_VOWELS))]
                for _ in range(syllables)
            )
        )
    return sorted(out)


def _image(rng: np.random.Generator, planted: Planted, type_id: int, n_types: int) -> Image.Image:
    if planted == "lexical":
        pixels = rng.integers(0, 256, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
        return Image.fromarray(pixels, "RGB")
    # hue from the type, stripes horizontal / vertical / diagonal by the type, jittered per item
    hue = (type_id * 0.61803) % 1.0
    base = np.array([np.sin(2 * np.pi * (hue + k / 3)) * 0.5 + 0.5 for k in range(3)]) * 255.0
    yy, xx = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE]
    direction = type_id % 3
    coord = (yy, xx, xx + yy)[direction]
    period = 6 + (type_id // 3) % 5 * 3
    stripes = ((coord // period) % 2).astype(np.float64)[..., None]
    jitter = rng.normal(0.0, 12.0, size=3)
    img = base * (0.55 + 0.45 * stripes) + jitter + rng.normal(0.0, 8.0, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")


def synthetic_catalog(
    out: str | Path,
    planted: Planted,
    *,
    n_items: int = 2000,
    n_users: int = 600,
    n_types: int = 40,
    purchases: tuple[int, int] = (6, 16),
    seed: int = 0,
) -> SyntheticReport:
    """Write a catalog whose only signal is ``planted`` (see the module docstring).

    Raises
    ------
    InvalidInputError
        Unknown ``planted`` or sizes that cannot make a catalog.
    """
    if planted not in ("lexical", "image"):
        raise InvalidInputError("planted", planted, "expected 'lexical' or 'image'")
    if (
        n_items < 10
        or n_users < 2
        or not 2 <= n_types <= n_items // 5
        or not 1 <= purchases[0] <= purchases[1]
    ):
        raise InvalidInputError("sizes", (n_items, n_users, n_types, purchases), "too small or inconsistent")
    rng = np.random.default_rng(seed)
    out_dir = Path(out)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    type_words = _words(rng, n_types, 3)
    modifiers = _words(rng, 60, 2)
    filler = _words(rng, 400, 3)
    departments = ["north", "south", "east", "west"]
    types = rng.integers(0, n_types, size=n_items)
    rows = []
    for i in range(n_items):
        t = int(types[i])
        mods = " ".join(rng.choice(modifiers, size=2, replace=False))
        noise_title = " ".join(rng.choice(filler, size=3, replace=False))
        title = f"{type_words[t]} {mods}" if planted == "lexical" else noise_title
        text = " ".join(rng.choice(filler, size=int(rng.integers(8, 20)))) + "."
        name = f"images/{i:05d}.png"
        _image(rng, planted, t, n_types).save(out_dir / name)
        rows.append(
            {
                "item_id": f"i{i:05d}",
                "title": title,
                "text": text,
                "category": departments[int(rng.integers(len(departments)))],
                "image_path": name,
            }
        )
    by_type = [np.flatnonzero(types == t) for t in range(n_types)]
    events = []
    start = pd.Timestamp("2026-01-01", tz="UTC")
    for u in range(n_users):
        liked = rng.choice(n_types, size=int(rng.integers(1, 3)), replace=False)
        pool = np.concatenate([by_type[int(t)] for t in liked])
        if pool.size == 0:
            continue
        n = min(pool.size, int(rng.integers(purchases[0], purchases[1] + 1)))
        for j in rng.choice(pool, size=n, replace=False):
            ts = start + pd.Timedelta(minutes=int(rng.integers(0, 60 * 24 * 60)))
            events.append(
                {"user_id": f"u{u:04d}", "item_id": f"i{int(j):05d}", "value": 1.0, "ts": ts.isoformat()}
            )
    items = pd.DataFrame(rows, columns=list(ITEM_COLUMNS))
    interactions = pd.DataFrame(events, columns=list(INTERACTION_COLUMNS))
    items.to_csv(out_dir / "items.csv", index=False, quoting=csv.QUOTE_MINIMAL)
    interactions.to_csv(out_dir / "interactions.csv", index=False)
    return SyntheticReport(
        out_dir, n_items, len(interactions), int(interactions["user_id"].nunique()), n_types
    )
