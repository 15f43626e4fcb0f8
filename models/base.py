"""The encoder interface: public methods enforce the shared rules, runtimes implement three private hooks.

Shared rules (every runtime, torch or onnxruntime, gets them for free):

- a missing or undecodable image degrades the item to text-only (``image_ok=False``);
- empty or whitespace-only text degrades it to image-only (``text_ok=False``);
- an item with neither is rejected with :class:`~coldstart.errors.ModalityError` naming the field, before
  any item of the batch is encoded;
- shared-space vectors are unit-norm float32; the content vector fuses the available modalities as the
  re-normalised sum of their unit embeddings (the towers are trained into one space, with modality
  dropout, so a degraded vector stays in that space);
- every :class:`~models.records.ItemEmbedding` carries the artifact's version.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError, ModalityError
from models.preprocess import ImagePreprocessor, TextTokenizer, usable_text
from models.records import ItemContent, ItemEmbedding

log = logging.getLogger(__name__)

F32 = NDArray[np.float32]
# Texts per text-tower call inside a batch, grouped by token length.
TEXT_GROUP = 8


@dataclass(frozen=True)
class EncoderSpec:
    """What every runtime shares: input builders, dimensions and the version stamped on vectors."""

    version: str
    kind: str
    preprocessor: ImagePreprocessor
    tokenizer: TextTokenizer
    image_dim: int
    text_dim: int
    shared_dim: int
    item_dim: int


@dataclass(frozen=True)
class FeatureBatch:
    """Frozen-tower outputs for a batch of items (zeros where a modality is missing).

    Attributes
    ----------
    image_feat, text_feat
        ``(n, image_dim)`` / ``(n, text_dim)`` float32 backbone features (item-tower inputs).
    image_emb, text_emb
        ``(n, shared_dim)`` float32 unit vectors in the shared space (zero rows where missing).
    image_ok, text_ok
        ``(n,)`` bool flags.
    """

    image_feat: F32
    text_feat: F32
    image_emb: F32
    text_emb: F32
    image_ok: NDArray[np.bool_]
    text_ok: NDArray[np.bool_]


def l2_normalize(x: F32, eps: float = 1e-12) -> F32:
    """Row-wise L2 normalisation of ``(n, d)``; all-zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out: F32 = (x / np.maximum(norms, eps)).astype(np.float32, copy=False)
    return out


class ItemEncoder(ABC):
    """Encode items (image bytes + text) into the shared space and the recommendation space.

    Parameters
    ----------
    spec
        Preprocessing, tokenizer, dimensions and version.
    batch_size
        Maximum items per tower call; larger inputs are processed in chunks.
    """

    def __init__(self, spec: EncoderSpec, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise InvalidInputError("batch_size", batch_size, "must be >= 1")
        self.spec = spec
        self.batch_size = batch_size

    # -- abstract hooks ---------------------------------------------------------------------------------
    @abstractmethod
    def _encode_images(self, pixels: F32) -> tuple[F32, F32]:
        """``pixels (B,3,S,S)`` -> ``(feat (B, image_dim), emb (B, shared_dim) unit-norm)``."""

    @abstractmethod
    def _encode_texts(
        self, input_ids: NDArray[np.int64], attention_mask: NDArray[np.int64]
    ) -> tuple[F32, F32]:
        """``ids, mask (B,T)`` -> ``(feat (B, text_dim), emb (B, shared_dim) unit-norm)``."""

    @abstractmethod
    def _encode_items(self, image_feat: F32, text_feat: F32, image_ok: F32, text_ok: F32) -> F32:
        """Item tower: features and float 0/1 flags ``(B,)`` -> ``(B, item_dim)``."""

    def _serve(self, tower: F32, features: FeatureBatch, rows: NDArray[np.int64], texts: list[str]) -> F32:
        """The served item vectors of ``rows`` from their item-tower output (the tower output itself
        unless the artifact ships a :class:`~models.representation.Representation`)."""
        return tower

    # -- properties -------------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """Version string of the artifact (stamped on every vector)."""
        return self.spec.version

    @property
    def shared_dim(self) -> int:
        """Dimension of the shared image/text space."""
        return self.spec.shared_dim

    @property
    def item_dim(self) -> int:
        """Dimension of the recommendation space (item tower output)."""
        return self.spec.item_dim

    # -- public API -------------------------------------------------------------------------------------
    def encode(self, items: Sequence[ItemContent]) -> list[ItemEmbedding]:
        """Encode items; one :class:`ItemEmbedding` per input, in order.

        Raises
        ------
        ModalityError
            An item has neither a decodable image nor non-empty text; no result is returned then (items
            with no image bytes and empty text are rejected before any tower runs).
        """
        for i, item in enumerate(items):
            if item.image is None and not usable_text(item.text):
                raise ModalityError(
                    f"items[{i}].image,text",
                    item.item_id,
                    "item has no usable modality: image is missing and text is empty",
                )
        results = self.encode_lenient(items)
        for res in results:
            if isinstance(res, ModalityError):
                raise res
        return [r for r in results if isinstance(r, ItemEmbedding)]

    def encode_lenient(self, items: Sequence[ItemContent]) -> list[ItemEmbedding | ModalityError]:
        """Like :meth:`encode`, but an unusable item yields its :class:`ModalityError` in its slot.

        For stream consumers: one bad event goes to the dead-letter topic, the rest of the batch is kept.
        """
        out: list[ItemEmbedding | ModalityError] = []
        for start in range(0, len(items), self.batch_size):
            out.extend(self._encode_chunk(items[start : start + self.batch_size], offset=start))
        return out

    def features(self, items: Sequence[ItemContent]) -> FeatureBatch:
        """Frozen-tower features and shared-space embeddings of items (no item tower, no error for
        items with no modality: both flags are simply false)."""
        parts = [
            self._features_chunk(items[s : s + self.batch_size])
            for s in range(0, len(items), self.batch_size)
        ]
        if not parts:
            return self._empty_features()
        return FeatureBatch(
            image_feat=np.concatenate([p.image_feat for p in parts]),
            text_feat=np.concatenate([p.text_feat for p in parts]),
            image_emb=np.concatenate([p.image_emb for p in parts]),
            text_emb=np.concatenate([p.text_emb for p in parts]),
            image_ok=np.concatenate([p.image_ok for p in parts]),
            text_ok=np.concatenate([p.text_ok for p in parts]),
        )

    def encode_text_query(self, texts: Sequence[str]) -> F32:
        """Shared-space unit vectors of free-text queries, ``(n, shared_dim)`` float32.

        Raises
        ------
        InvalidInputError
            A text is empty or whitespace only (``texts[i]``).
        """
        for i, text in enumerate(texts):
            if not isinstance(text, str) or not usable_text(text):
                raise InvalidInputError(f"texts[{i}]", text, "query text must be a non-empty string")
        chunks = [
            self._texts(list(texts[s : s + self.batch_size]))[1]
            for s in range(0, len(texts), self.batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.shared_dim), dtype=np.float32)
        return l2_normalize(np.concatenate(chunks))

    def encode_image_query(self, images: Sequence[bytes]) -> F32:
        """Shared-space unit vectors of query images (encoded bytes), ``(n, shared_dim)`` float32.

        Raises
        ------
        InvalidInputError
            An image cannot be decoded (``images[i]``).
        """
        pixels: list[F32] = []
        for i, data in enumerate(images):
            arr = self.spec.preprocessor.decode(data) if isinstance(data, bytes | bytearray) else None
            if arr is None:
                shown = f"<{len(data)} bytes>" if isinstance(data, bytes | bytearray) else data
                raise InvalidInputError(f"images[{i}]", shown, "not a decodable image")
            pixels.append(arr)
        chunks = [
            self._encode_images(self.spec.preprocessor.batch(pixels[s : s + self.batch_size]))[1]
            for s in range(0, len(pixels), self.batch_size)
        ]
        if not chunks:
            return np.zeros((0, self.shared_dim), dtype=np.float32)
        return l2_normalize(np.concatenate(chunks).astype(np.float32, copy=False))

    # -- internals --------------------------------------------------------------------------------------
    def _texts(self, texts: list[str]) -> tuple[F32, F32]:
        # texts of similar length are run together (padding to the batch's longest text is the main
        # waste of batched BERT-style encoding); rows are put back in input order
        feat_out = np.zeros((len(texts), self.spec.text_dim), dtype=np.float32)
        emb_out = np.zeros((len(texts), self.spec.shared_dim), dtype=np.float32)
        for rows, ids, mask in self.spec.tokenizer.groups(texts, TEXT_GROUP):
            feat, emb = self._encode_texts(ids, mask)
            feat_out[rows] = feat
            emb_out[rows] = emb
        return feat_out, emb_out

    def _empty_features(self, n: int = 0) -> FeatureBatch:
        s = self.spec
        return FeatureBatch(
            image_feat=np.zeros((n, s.image_dim), np.float32),
            text_feat=np.zeros((n, s.text_dim), np.float32),
            image_emb=np.zeros((n, s.shared_dim), np.float32),
            text_emb=np.zeros((n, s.shared_dim), np.float32),
            image_ok=np.zeros(n, dtype=bool),
            text_ok=np.zeros(n, dtype=bool),
        )

    def _features_chunk(self, items: Sequence[ItemContent]) -> FeatureBatch:
        n = len(items)
        fb = self._empty_features(n)
        decoded: list[tuple[int, F32]] = []
        for i, item in enumerate(items):
            if item.image is not None:
                arr = self.spec.preprocessor.decode(item.image)
                if arr is None:
                    log.info("item %r: undecodable image, degrading to text-only", item.item_id)
                else:
                    decoded.append((i, arr))
        text_rows = [i for i, item in enumerate(items) if usable_text(item.text)]
        if decoded:
            rows = [i for i, _ in decoded]
            feat, emb = self._encode_images(self.spec.preprocessor.batch([a for _, a in decoded]))
            fb.image_feat[rows] = feat
            fb.image_emb[rows] = l2_normalize(emb.astype(np.float32, copy=False))
            fb.image_ok[rows] = True
        if text_rows:
            feat, emb = self._texts([items[i].text for i in text_rows])
            fb.text_feat[text_rows] = feat
            fb.text_emb[text_rows] = l2_normalize(emb)
            fb.text_ok[text_rows] = True
        return fb

    def _encode_chunk(self, items: Sequence[ItemContent], offset: int) -> list[ItemEmbedding | ModalityError]:
        fb = self._features_chunk(items)
        ok = fb.image_ok | fb.text_ok
        errors: dict[int, ModalityError] = {}
        for bad in np.flatnonzero(~ok).tolist():
            item = items[bad]
            why = "missing" if item.image is None else "undecodable"
            errors[bad] = ModalityError(
                f"items[{offset + bad}].image,text",
                item.item_id,
                f"item has no usable modality: image is {why} and text is empty",
            )
        rows = np.flatnonzero(ok)
        item_vecs = np.zeros((len(items), self.item_dim), dtype=np.float32)
        if rows.size:
            tower = self._encode_items(
                fb.image_feat[rows],
                fb.text_feat[rows],
                fb.image_ok[rows].astype(np.float32),
                fb.text_ok[rows].astype(np.float32),
            )
            item_vecs[rows] = self._serve(tower, fb, rows, [items[int(r)].text for r in rows])
        content = l2_normalize(fb.image_emb + fb.text_emb)
        out: list[ItemEmbedding | ModalityError] = []
        for i, item in enumerate(items):
            if i in errors:
                out.append(errors[i])
                continue
            out.append(
                ItemEmbedding(
                    item_id=item.item_id,
                    content_vector=content[i].copy(),
                    item_vector=item_vecs[i].copy(),
                    image_ok=bool(fb.image_ok[i]),
                    text_ok=bool(fb.text_ok[i]),
                    encoder_version=self.version,
                )
            )
        return out
