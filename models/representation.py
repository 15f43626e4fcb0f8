"""The served item representation: weighted blocks in one vector, so one inner product scores them all.

An item's served vector is the concatenation of the blocks whose weight is above zero::

    v = [ w_tower / s_tower * t ;  w_content / s_content * c ;  w_lexical / s_lexical * l ]

- ``t``: the item tower's output (learned, raw);
- ``c``: the frozen image and text features, each mean-centred on training items and unit-normalised,
  concatenated, projected on their principal axes (fitted on training items) and unit-normalised: the
  dense form of ``content_knn``;
- ``l``: the lexical channel (:mod:`models.lexical`), the dense form of ``tfidf_knn``.

A user's served vector is the concatenation of unit-norm profiles in the same blocks (see
:mod:`models.blend`), so ``u . v = sum_b w_b / s_b * (u_b . x_b)``. ``s_b`` is the spread (standard
deviation) of block ``b``'s user-item scores on the training data: it puts the blocks on one scale, so
the weights chosen on validation mean the same on any catalog. Weights (0 allowed) and the reasons for
them are chosen by ``coldstart models train`` and recorded in the manifest.

This module needs numpy only: the encoder worker composes vectors without torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import ArtifactError, InvalidInputError
from models.base import l2_normalize
from models.lexical import LexicalModel

F32 = NDArray[np.float32]
BlockName = Literal["tower", "content", "lexical"]
BLOCKS: tuple[BlockName, ...] = ("tower", "content", "lexical")
FILE = "representation.npz"


def centre_modality(x: F32, ok: NDArray[np.bool_], mean: F32) -> F32:
    """One modality's frozen features, mean-centred and unit-normalised; rows without it are 0."""
    return l2_normalize((x - mean).astype(np.float32)) * np.asarray(ok, dtype=np.float32)[:, None]


def modality_means(
    image: F32, text: F32, image_ok: NDArray[np.bool_], text_ok: NDArray[np.bool_]
) -> tuple[F32, F32]:
    """Each modality's mean over the items that have it (zeros when none has it)."""
    img: F32 = np.asarray(
        image[image_ok].mean(axis=0) if image_ok.any() else np.zeros(image.shape[1]), dtype=np.float32
    )
    txt: F32 = np.asarray(
        text[text_ok].mean(axis=0) if text_ok.any() else np.zeros(text.shape[1]), dtype=np.float32
    )
    return img, txt


def centre_content(
    image: F32,
    text: F32,
    image_ok: NDArray[np.bool_],
    text_ok: NDArray[np.bool_],
    image_mean: F32,
    text_mean: F32,
) -> F32:
    """``[image | text]`` frozen features, each mean-centred and unit-normalised; absent modality = 0."""
    parts = [centre_modality(image, image_ok, image_mean), centre_modality(text, text_ok, text_mean)]
    return np.concatenate(parts, axis=1).astype(np.float32)


@dataclass
class ContentProjection:
    """Centring means and principal axes of the frozen features (fitted on training items)."""

    image_mean: F32
    text_mean: F32
    mean: F32
    basis: F32

    @classmethod
    def fit(
        cls,
        image: F32,
        text: F32,
        image_ok: NDArray[np.bool_],
        text_ok: NDArray[np.bool_],
        dim: int = 128,
    ) -> ContentProjection:
        """Means over items that have each modality, then the top ``dim`` principal axes."""
        img_mean, txt_mean = modality_means(image, text, image_ok, text_ok)
        raw = centre_content(image, text, image_ok, text_ok, img_mean, txt_mean)
        mean = raw.mean(axis=0)
        _, _, vt = np.linalg.svd(raw - mean, full_matrices=False)
        basis = np.ascontiguousarray(vt[: max(1, min(dim, vt.shape[0]))].T, dtype=np.float32)
        return cls(img_mean, txt_mean, mean.astype(np.float32), basis)

    def transform(
        self, image: F32, text: F32, image_ok: NDArray[np.bool_], text_ok: NDArray[np.bool_]
    ) -> F32:
        """Unit-norm ``(n, dim)`` content blocks."""
        raw = centre_content(image, text, image_ok, text_ok, self.image_mean, self.text_mean)
        return l2_normalize(((raw - self.mean) @ self.basis).astype(np.float32))


@dataclass(frozen=True)
class BlockSpec:
    """One served block: its weight (> 0) and its score spread on training data."""

    name: BlockName
    dim: int
    weight: float
    scale: float


@dataclass
class Representation:
    """The served representation: which blocks, their weights, and the fitted parts they need."""

    blocks: list[BlockSpec]
    lexical: LexicalModel | None = None
    content: ContentProjection | None = None
    info: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.blocks:
            raise InvalidInputError("blocks", [], "a representation needs at least one block")
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names) or any(b.weight <= 0 or b.scale <= 0 for b in self.blocks):
            raise InvalidInputError("blocks", names, "distinct blocks with positive weight and scale")
        if "lexical" in names and self.lexical is None:
            raise InvalidInputError("lexical", None, "the lexical block needs a fitted lexical model")
        if "content" in names and self.content is None:
            raise InvalidInputError("content", None, "the content block needs a fitted projection")

    @property
    def dim(self) -> int:
        """Width of the served vector."""
        return sum(b.dim for b in self.blocks)

    @property
    def names(self) -> list[BlockName]:
        """Served block names, in vector order."""
        return [b.name for b in self.blocks]

    def weights(self) -> dict[str, float]:
        """``{block: weight}`` for every known block (0 for the ones not served)."""
        served = {b.name: b.weight for b in self.blocks}
        return {name: served.get(name, 0.0) for name in BLOCKS}

    def item_blocks(
        self,
        tower: F32,
        image_feat: F32,
        text_feat: F32,
        image_ok: NDArray[np.bool_],
        text_ok: NDArray[np.bool_],
        texts: Sequence[str],
    ) -> dict[BlockName, F32]:
        """The unweighted block vectors of items (only the served blocks are computed); the encoder
        worker serves ``compose_items(item_blocks(...))``."""
        out: dict[BlockName, F32] = {}
        for block in self.blocks:
            if block.name == "tower":
                out["tower"] = np.asarray(tower, dtype=np.float32)
            elif block.name == "content" and self.content is not None:
                out["content"] = self.content.transform(image_feat, text_feat, image_ok, text_ok)
            elif block.name == "lexical" and self.lexical is not None:
                out["lexical"] = self.lexical.transform(texts)
        return out

    def compose_items(self, blocks: dict[BlockName, F32]) -> F32:
        """Served item vectors ``(n, dim)`` from unweighted blocks."""
        parts = [blocks[b.name] * np.float32(b.weight / b.scale) for b in self.blocks]
        return np.ascontiguousarray(np.concatenate(parts, axis=1), dtype=np.float32)

    def compose_users(self, profiles: dict[BlockName, F32]) -> F32:
        """Served user vectors ``(n, dim)`` from per-block profiles (each row unit-normalised here)."""
        return np.ascontiguousarray(
            np.concatenate([l2_normalize(profiles[b.name]) for b in self.blocks], axis=1), dtype=np.float32
        )

    # -- persistence ----------------------------------------------------------------------------------
    def save(self, directory: Path) -> Path:
        """Write ``representation.npz`` into ``directory``; returns its path."""
        arrays: dict[str, NDArray[np.generic]] = {
            "block_names": np.asarray(self.names, dtype=str),
            "block_dims": np.asarray([b.dim for b in self.blocks], dtype=np.int64),
            "block_weights": np.asarray([b.weight for b in self.blocks], dtype=np.float64),
            "block_scales": np.asarray([b.scale for b in self.blocks], dtype=np.float64),
        }
        if self.lexical is not None and "lexical" in self.names:
            arrays.update(self.lexical.to_arrays())
        if self.content is not None and "content" in self.names:
            c = self.content
            arrays |= {
                "content_image_mean": c.image_mean,
                "content_text_mean": c.text_mean,
                "content_mean": c.mean,
                "content_basis": c.basis,
            }
        path = directory / FILE
        np.savez(path, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, directory: Path) -> Representation:
        """Read ``representation.npz``.

        Raises
        ------
        ArtifactError
            Missing file or inconsistent contents.
        """
        path = directory / FILE
        if not path.is_file():
            raise ArtifactError(f"artifact {directory} has no {FILE}")
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
            blocks = [
                BlockSpec(str(n), int(d), float(w), float(s))  # type: ignore[arg-type]
                for n, d, w, s in zip(
                    arrays["block_names"],
                    arrays["block_dims"],
                    arrays["block_weights"],
                    arrays["block_scales"],
                    strict=True,
                )
            ]
            unknown = [b.name for b in blocks if b.name not in BLOCKS]
            if unknown:
                raise ArtifactError(f"{path}: unknown blocks {unknown}")
            lexical = LexicalModel.from_arrays(arrays) if "lexical_terms" in arrays else None
            content = None
            if "content_basis" in arrays:
                content = ContentProjection(
                    arrays["content_image_mean"].astype(np.float32),
                    arrays["content_text_mean"].astype(np.float32),
                    arrays["content_mean"].astype(np.float32),
                    arrays["content_basis"].astype(np.float32),
                )
            return cls(blocks, lexical=lexical, content=content)
        except (KeyError, ValueError, InvalidInputError) as exc:
            raise ArtifactError(f"{path} is malformed: {exc}") from exc
