"""A table of frozen-tower features (image and text per item, with their ok flags), saved as npz."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import ArtifactError, InvalidInputError

#: Version of the npz layout (part of the feature cache's key).
CACHE_FORMAT = 1


@dataclass(frozen=True)
class FeatureTable:
    """Frozen image/text features of ``n`` items.

    Attributes
    ----------
    item_ids
        ``n`` item ids (row order).
    image
        ``(n, image_dim)`` float32 frozen image-tower features (zeros where ``image_ok`` is false).
    text
        ``(n, text_dim)`` float32 frozen text-tower features (zeros where ``text_ok`` is false).
    image_ok, text_ok
        ``(n,)`` bool: the image decoded / the text is non-empty.
    """

    item_ids: list[str]
    image: NDArray[np.float32]
    text: NDArray[np.float32]
    image_ok: NDArray[np.bool_]
    text_ok: NDArray[np.bool_]

    def __post_init__(self) -> None:
        n = len(self.item_ids)
        for name in ("image", "text", "image_ok", "text_ok"):
            arr = getattr(self, name)
            if arr.shape[0] != n:
                raise InvalidInputError(name, arr.shape, f"expected {n} rows (one per item id)")

    def __len__(self) -> int:
        return len(self.item_ids)

    def take(self, rows: Sequence[int] | NDArray[np.int64]) -> FeatureTable:
        """Rows ``rows`` as a new table."""
        idx = np.asarray(rows, dtype=np.int64)
        return FeatureTable(
            item_ids=[self.item_ids[int(i)] for i in idx],
            image=self.image[idx],
            text=self.text[idx],
            image_ok=self.image_ok[idx],
            text_ok=self.text_ok[idx],
        )

    def select(self, item_ids: Sequence[str]) -> FeatureTable:
        """The rows of ``item_ids`` (in that order).

        Raises
        ------
        InvalidInputError
            An id is not in the table.
        """
        pos = {i: r for r, i in enumerate(self.item_ids)}
        missing = [i for i in item_ids if i not in pos]
        if missing:
            raise InvalidInputError("item_ids", missing[:5], f"{len(missing)} ids not in the feature table")
        return self.take([pos[i] for i in item_ids])

    def save(self, path: Path) -> None:
        """Write to an ``.npz`` file."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            format=np.asarray(CACHE_FORMAT),
            item_ids=np.asarray(self.item_ids, dtype=str),
            image=self.image,
            text=self.text,
            image_ok=self.image_ok,
            text_ok=self.text_ok,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FeatureTable:
        """Read a file written by :meth:`save`.

        Raises
        ------
        ArtifactError
            Unreadable or incompatible file.
        """
        try:
            with np.load(path) as data:
                fmt = int(data["format"]) if "format" in data.files else CACHE_FORMAT
                if fmt != CACHE_FORMAT:
                    raise ArtifactError(f"feature cache {path} has format {fmt}")
                return cls(
                    item_ids=[str(i) for i in data["item_ids"]],
                    image=data["image"].astype(np.float32),
                    text=data["text"].astype(np.float32),
                    image_ok=data["image_ok"].astype(bool),
                    text_ok=data["text_ok"].astype(bool),
                )
        except (OSError, KeyError, ValueError) as exc:
            raise ArtifactError(f"unreadable feature cache {path}: {exc}") from exc
