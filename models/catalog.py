"""The generic catalog layout every offline evaluation reads, and the MovieLens adapter that writes it.

Layout of a catalog directory ``DIR``::

    DIR/items.csv          one row per item
        item_id     str, required, unique, non-empty
        title       str, may be empty
        text        str, the item's description, may be empty
        category    str, free-form category/genre/department, may be empty
        image_path  str, path of the item's image RELATIVE TO DIR (symlinks allowed), may be empty
    DIR/interactions.csv   one row per (user, item) event
        user_id     str, required, non-empty
        item_id     str, required, must appear in items.csv
        value       float, required: a rating, a count, 1 for a click/purchase...
        ts          ISO-8601 date/datetime (naive = UTC) or epoch seconds; required
    DIR/<images>           the image files referenced by image_path

An item needs at least one modality: a non-empty title or text, or an image. The encoder reads the
text ``"{title}. {category}. {text}"`` (empty parts skipped), see :meth:`CatalogItem.full_text`.

Every violation raises :class:`coldstart.errors.InvalidInputError` naming the file, the row (1-based
data row, header excluded), the column and the offending value.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from coldstart.errors import InvalidInputError, ModalityError
from models.records import ItemContent

ITEM_COLUMNS: tuple[str, ...] = ("item_id", "title", "text", "category", "image_path")
INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "value", "ts")
_REQUIRED_ITEM_COLUMNS: tuple[str, ...] = ("item_id",)


@dataclass(frozen=True)
class CatalogItem:
    """One catalog item.

    Parameters
    ----------
    item_id
        Opaque id, unique within the catalog.
    title, text, category
        Free text (possibly empty).
    image_path
        Absolute path of the image file, or ``None`` when the item has no image.
    """

    item_id: str
    title: str
    text: str
    category: str
    image_path: Path | None

    def full_text(self) -> str:
        """The text the encoder reads: ``"{title}. {category}. {text}"`` with empty parts skipped."""
        parts = [p.strip() for p in (self.title, self.category, self.text)]
        return ". ".join(p.rstrip(".") if i < 2 else p for i, p in enumerate(parts) if p)

    def title_text(self) -> str:
        """The text-poor variant: the title alone (falls back to the full text when there is no title)."""
        return self.title.strip() or self.full_text()

    def read_image(self) -> bytes | None:
        """The image file's bytes, or ``None`` when the item has no image or the file cannot be read."""
        if self.image_path is None:
            return None
        try:
            return self.image_path.read_bytes()
        except OSError:
            return None

    def content(self, *, title_only: bool = False) -> ItemContent:
        """What the encoder sees of this item (image bytes are read from disk).

        Parameters
        ----------
        title_only
            Cut the text to the title (the text-poor condition of the evaluation).
        """
        text = self.title_text() if title_only else self.full_text()
        return ItemContent(item_id=self.item_id, text=text, image=self.read_image())


@dataclass(frozen=True)
class Catalog:
    """A loaded, validated catalog.

    Parameters
    ----------
    root
        The catalog directory.
    items
        The items in file order.
    interactions
        DataFrame with columns ``user_id`` (str), ``item_id`` (str), ``value`` (float64) and
        ``ts`` (``datetime64[ns, UTC]``), in file order.
    """

    root: Path
    items: list[CatalogItem]
    interactions: pd.DataFrame

    @property
    def item_ids(self) -> list[str]:
        """Item ids in catalog order."""
        return [it.item_id for it in self.items]

    def item(self, item_id: str) -> CatalogItem:
        """The item with this id (``InvalidInputError`` if unknown)."""
        for it in self.items:
            if it.item_id == item_id:
                return it
        raise InvalidInputError("item_id", item_id, "not in the catalog")

    def __iter__(self) -> Iterator[CatalogItem]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @classmethod
    def load(cls, root: str | os.PathLike[str], *, check_images: bool = True) -> Catalog:
        """Read and validate ``root/items.csv`` and ``root/interactions.csv``.

        Parameters
        ----------
        root
            The catalog directory.
        check_images
            Verify that every referenced image file exists (a file that exists but cannot be
            decoded is not an error: that item degrades to text-only at encoding time).

        Raises
        ------
        InvalidInputError
            Missing directory/file/column, empty or duplicate ids, an item with no modality, an
            image file that does not exist, a non-numeric value, an unparsable timestamp, or an
            interaction with an unknown item. The message names file, row, column and value.
        """
        root_path = Path(root)
        if not root_path.is_dir():
            raise InvalidInputError("catalog", str(root_path), "not a directory")
        items = _load_items(root_path, check_images=check_images)
        interactions = _load_interactions(root_path, {it.item_id for it in items})
        return cls(root=root_path, items=items, interactions=interactions)


def _read_csv(path: Path, required: Sequence[str], optional: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise InvalidInputError(path.name, str(path), "file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InvalidInputError(path.name, str(path), f"not a readable UTF-8 CSV file: {exc}") from exc
    columns = [str(c).strip() for c in frame.columns]
    frame.columns = pd.Index(columns)
    for column in required:
        if column not in columns:
            raise InvalidInputError(
                f"{path.name}.columns", columns, f"missing required column {column!r} (need {list(required)})"
            )
    for column in optional:
        if column not in frame.columns:
            frame[column] = ""
    return frame


def _load_items(root: Path, *, check_images: bool) -> list[CatalogItem]:
    path = root / "items.csv"
    frame = _read_csv(
        path, _REQUIRED_ITEM_COLUMNS, [c for c in ITEM_COLUMNS if c not in _REQUIRED_ITEM_COLUMNS]
    )
    items: list[CatalogItem] = []
    seen: dict[str, int] = {}
    for row_no, row in enumerate(frame[list(ITEM_COLUMNS)].itertuples(index=False, name=None), start=1):
        item_id, title, text, category, image_rel = (str(v) for v in row)
        item_id = item_id.strip()
        where = f"items.csv row {row_no}"
        if not item_id:
            raise InvalidInputError(f"{where}.item_id", item_id, "empty item id")
        if item_id in seen:
            raise InvalidInputError(f"{where}.item_id", item_id, f"duplicate of row {seen[item_id]}")
        seen[item_id] = row_no
        image_path: Path | None = None
        image_rel = image_rel.strip()
        if image_rel:
            if Path(image_rel).is_absolute():
                raise InvalidInputError(
                    f"{where}.image_path", image_rel, "must be relative to the catalog dir"
                )
            image_path = (root / image_rel).absolute()
            if check_images and not image_path.is_file():
                raise InvalidInputError(f"{where}.image_path", image_rel, f"no such file under {root}")
        if not (title.strip() or text.strip()) and image_path is None:
            raise ModalityError(f"{where}.item_id", item_id, "item has no title, no text and no image")
        items.append(CatalogItem(item_id, title.strip(), text.strip(), category.strip(), image_path))
    if not items:
        raise InvalidInputError("items.csv", str(path), "no items")
    return items


_NUMERIC = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _parse_ts(raw: pd.Series) -> pd.Series:
    """Epoch seconds or ISO-8601 strings -> ``datetime64[ns, UTC]``; raises on the first bad value."""
    values = raw.astype(str).str.strip()
    numeric = values.str.match(_NUMERIC)
    out = pd.Series(pd.NaT, index=values.index, dtype="datetime64[ns, UTC]")
    if numeric.any():
        secs = pd.to_numeric(values[numeric], errors="coerce")
        out[numeric] = pd.to_datetime(secs, unit="s", utc=True, errors="coerce")
    if (~numeric).any():
        out[~numeric] = pd.to_datetime(values[~numeric], utc=True, errors="coerce", format="ISO8601")
    bad = out.isna()
    if bad.any():
        pos = int(np.flatnonzero(bad.to_numpy())[0])
        raise InvalidInputError(
            f"interactions.csv row {pos + 1}.ts",
            values.iloc[pos],
            "not an ISO-8601 date/datetime or epoch seconds",
        )
    return out


def _load_interactions(root: Path, item_ids: set[str]) -> pd.DataFrame:
    path = root / "interactions.csv"
    frame = _read_csv(path, INTERACTION_COLUMNS, ())
    user = frame["user_id"].astype(str).str.strip()
    item = frame["item_id"].astype(str).str.strip()
    empty_user = np.flatnonzero((user == "").to_numpy())
    if empty_user.size:
        raise InvalidInputError(f"interactions.csv row {empty_user[0] + 1}.user_id", "", "empty user id")
    unknown = np.flatnonzero((~item.isin(item_ids)).to_numpy())
    if unknown.size:
        pos = int(unknown[0])
        raise InvalidInputError(
            f"interactions.csv row {pos + 1}.item_id",
            item.iloc[pos],
            f"not in items.csv ({unknown.size} interaction rows reference unknown items)",
        )
    value = pd.to_numeric(frame["value"].astype(str).str.strip(), errors="coerce")
    bad_value = np.flatnonzero((value.isna() | ~np.isfinite(value.to_numpy(dtype=float))).to_numpy())
    if bad_value.size:
        pos = int(bad_value[0])
        raise InvalidInputError(
            f"interactions.csv row {pos + 1}.value", frame["value"].iloc[pos], "not a finite number"
        )
    ts = _parse_ts(frame["ts"])
    return pd.DataFrame(
        {
            "user_id": user.to_numpy(dtype=object),
            "item_id": item.to_numpy(dtype=object),
            "value": value.astype("float64").to_numpy(),
            "ts": ts.to_numpy(),
        }
    ).astype({"ts": "datetime64[ns, UTC]"})


# --------------------------------------------------------------------------------------------------
# MovieLens adapter
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AdaptReport:
    """What :func:`adapt_movielens` wrote."""

    out_dir: Path
    n_items: int
    n_interactions: int
    n_users: int


def _read_melu_plots(path: Path) -> dict[str, str]:
    plots: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            fields = line.rstrip("\r\n").split("::")
            if len(fields) < 10:
                continue
            plot = fields[9].strip()
            if plot and plot.upper() != "N/A":
                plots[fields[0].strip()] = plot
    return plots


def adapt_movielens(
    src: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    require_image: bool = True,
    require_plot: bool = True,
) -> AdaptReport:
    """Write ``src`` (the shared MovieLens folder) into the generic catalog layout at ``out``.

    ml-latest-small ratings are joined to ``ml1m_posters/{movieId}.jpg`` and to the plots of
    ``ml-1m_meta/movies_extrainfos_MeLU.dat``. Item: title = ml-latest-small title (with year),
    category = its genres (comma-separated), text = the plot; the encoder therefore reads
    title + genres + plot. Images are NOT copied: ``out/images`` is a symlink to the poster folder
    and ``image_path`` is ``images/{movieId}.jpg``. Interactions: value = the rating (0.5-5),
    ts = epoch seconds.

    Parameters
    ----------
    require_image, require_plot
        Keep only movies that have a poster / a plot (the KDD'24 protocol drops items with missing
        content). With both false every rated movie is written, degrading to what it has.
    """
    src_path = Path(src)
    out_path = Path(out)
    ratings_path = src_path / "ml-latest-small" / "ratings.csv"
    movies_path = src_path / "ml-latest-small" / "movies.csv"
    melu_path = src_path / "ml-1m_meta" / "movies_extrainfos_MeLU.dat"
    posters = (src_path / "ml1m_posters").absolute()
    for needed in (ratings_path, movies_path, melu_path, posters):
        if not needed.exists():
            raise InvalidInputError("src", str(src_path), f"missing {needed}")
    ratings = pd.read_csv(ratings_path, dtype={"userId": str, "movieId": str})
    movies = pd.read_csv(movies_path, dtype={"movieId": str}, keep_default_na=False)
    plots = _read_melu_plots(melu_path)

    rows: list[dict[str, str]] = []
    rated = set(ratings["movieId"].unique())
    for movie_id, title, genres in movies[["movieId", "title", "genres"]].itertuples(index=False, name=None):
        if movie_id not in rated:
            continue
        has_image = (posters / f"{movie_id}.jpg").is_file()
        plot = plots.get(movie_id, "")
        if (require_image and not has_image) or (require_plot and not plot):
            continue
        genre_text = "" if genres == "(no genres listed)" else ", ".join(str(genres).split("|"))
        rows.append(
            {
                "item_id": str(movie_id),
                "title": str(title).strip(),
                "text": plot,
                "category": genre_text,
                "image_path": f"images/{movie_id}.jpg" if has_image else "",
            }
        )
    keep = {r["item_id"] for r in rows}
    kept = ratings[ratings["movieId"].isin(keep)]
    out_path.mkdir(parents=True, exist_ok=True)
    link = out_path / "images"
    if link.is_symlink() or link.exists():
        if not link.is_symlink():
            raise InvalidInputError("out", str(out_path), "out/images exists and is not a symlink")
        link.unlink()
    link.symlink_to(posters, target_is_directory=True)
    pd.DataFrame(rows, columns=list(ITEM_COLUMNS)).to_csv(
        out_path / "items.csv", index=False, quoting=csv.QUOTE_MINIMAL
    )
    pd.DataFrame(
        {
            "user_id": kept["userId"].to_numpy(),
            "item_id": kept["movieId"].to_numpy(),
            "value": kept["rating"].astype(float).to_numpy(),
            "ts": kept["timestamp"].astype("int64").to_numpy(),
        }
    ).to_csv(out_path / "interactions.csv", index=False)
    return AdaptReport(
        out_dir=out_path,
        n_items=len(rows),
        n_interactions=len(kept),
        n_users=int(kept["userId"].nunique()),
    )
