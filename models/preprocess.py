"""Serving-time preprocessing in PIL/numpy and the ``tokenizers`` library only (no torch, no torchvision).

The same functions feed the torch towers (training, feature extraction, parity tests) and the ONNX
sessions (serving), so both runtimes see bit-identical inputs.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from coldstart.errors import ArtifactError, InvalidInputError

log = logging.getLogger(__name__)

_RESAMPLE = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


@dataclass(frozen=True)
class ImagePreprocessor:
    """Decode, resize (shorter side), centre-crop and normalise images into ``(3, size, size)`` float32.

    Parameters
    ----------
    size
        Output side in pixels.
    mean, std
        Per-channel normalisation of ``[0, 1]`` RGB values.
    resample
        PIL resampling filter for the resize.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: Literal["bilinear", "bicubic"] = "bilinear"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form stored in the artifact manifest."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ImagePreprocessor:
        """Inverse of :meth:`to_dict`."""
        mean = tuple(float(v) for v in data["mean"])
        std = tuple(float(v) for v in data["std"])
        if len(mean) != 3 or len(std) != 3:
            raise ArtifactError(f"image preprocessor mean/std must have 3 channels, got {mean}, {std}")
        return cls(
            size=int(data["size"]),
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            resample=data.get("resample", "bilinear"),
        )

    def decode(self, data: bytes) -> NDArray[np.float32] | None:
        """Decode and preprocess one encoded image.

        Returns
        -------
        ndarray or None
            ``(3, size, size)`` float32, or ``None`` when the bytes are not a decodable image (the caller
            degrades the item to text-only).
        """
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as img:
                    img.load()
                    rgb = img.convert("RGB")
        except (
            UnidentifiedImageError,
            OSError,
            ValueError,
            SyntaxError,
            Image.DecompressionBombError,
        ) as exc:
            log.debug("undecodable image (%d bytes): %s", len(data), exc)
            return None
        if rgb.width < 1 or rgb.height < 1:
            return None
        return self.transform(rgb)

    def transform(self, img: Image.Image) -> NDArray[np.float32]:
        """Resize the shorter side to ``size``, centre-crop, scale to [0, 1], normalise: ``(3, S, S)``."""
        w, h = img.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        img = img.resize((nw, nh), _RESAMPLE[self.resample])
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        arr: NDArray[np.float32] = np.asarray(img, dtype=np.float32) * np.float32(1.0 / 255.0)
        mean = np.asarray(self.mean, dtype=np.float32)
        inv_std = np.float32(1.0) / np.asarray(self.std, dtype=np.float32)
        out: NDArray[np.float32] = np.ascontiguousarray(
            ((arr - mean) * inv_std).transpose(2, 0, 1), dtype=np.float32
        )
        return out

    def batch(self, images: Sequence[NDArray[np.float32]]) -> NDArray[np.float32]:
        """Stack preprocessed images into ``(B, 3, size, size)``."""
        if not images:
            return np.zeros((0, 3, self.size, self.size), dtype=np.float32)
        return np.stack(images).astype(np.float32, copy=False)


class TextTokenizer:
    """A ``tokenizers`` tokenizer with a token cap and a padding mode.

    Parameters
    ----------
    tokenizer
        Path to a HF ``tokenizer.json``, or a ``tokenizers.Tokenizer`` (copied, not modified).
    max_tokens
        Truncation length, special tokens included.
    pad_to
        ``"longest"``: pad to the longest text in the batch (BERT-style towers with an attention mask);
        ``"max"``: always pad to ``pad_length`` (CLIP towers with a fixed context).
    pad_id
        Id used for padding.
    pad_length
        Fixed padded length for ``pad_to="max"`` (default ``max_tokens``); must be >= ``max_tokens``.
    """

    def __init__(
        self,
        tokenizer: Path | Any,
        max_tokens: int,
        pad_to: Literal["longest", "max"] = "longest",
        pad_id: int = 0,
        pad_length: int | None = None,
    ) -> None:
        from tokenizers import Tokenizer

        if max_tokens < 2:
            raise InvalidInputError("max_tokens", max_tokens, "must be >= 2")
        if pad_length is not None and pad_length < max_tokens:
            raise InvalidInputError("pad_length", pad_length, f"must be >= max_tokens={max_tokens}")
        try:
            if isinstance(tokenizer, Path | str):
                self._tok = Tokenizer.from_file(str(tokenizer))
            else:
                self._tok = Tokenizer.from_str(tokenizer.to_str())
        except Exception as exc:  # tokenizers raises a bare Exception on malformed files
            raise ArtifactError(f"cannot read tokenizer {tokenizer}: {exc}") from exc
        self.max_tokens = max_tokens
        self.pad_to = pad_to
        self.pad_id = pad_id
        self.pad_length = pad_length or max_tokens
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_tokens)

    def __call__(self, texts: Sequence[str]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """Tokenize a batch.

        Returns
        -------
        input_ids, attention_mask
            Both ``(B, T)`` int64; ``T = pad_length`` for ``pad_to="max"``, else the longest text.
        """
        return self._pad([e.ids for e in self._tok.encode_batch(list(texts))])

    def groups(
        self, texts: Sequence[str], group_size: int
    ) -> list[tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]]:
        """Tokenize once, then split into groups of similar length (less padding).

        Returns
        -------
        list of (rows, input_ids, attention_mask)
            ``rows`` are the positions in ``texts`` of each group's rows. With ``pad_to="max"`` padding
            is fixed, so there is a single group in input order.
        """
        encs = [e.ids for e in self._tok.encode_batch(list(texts))]
        if self.pad_to == "max" or len(encs) <= group_size:
            return [(np.arange(len(encs), dtype=np.int64), *self._pad(encs))]
        order = np.argsort(
            np.fromiter((len(e) for e in encs), dtype=np.int64, count=len(encs)), kind="stable"
        )
        out = []
        for s in range(0, len(order), group_size):
            rows = order[s : s + group_size].astype(np.int64)
            out.append((rows, *self._pad([encs[int(r)] for r in rows])))
        return out

    def _pad(self, encs: list[list[int]]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        length = self.pad_length if self.pad_to == "max" else max((len(e) for e in encs), default=1)
        ids = np.full((len(encs), max(length, 1)), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, enc in enumerate(encs):
            n = len(enc)
            ids[row, :n] = enc
            mask[row, :n] = 1
        return ids, mask


def usable_text(text: str | None) -> bool:
    """True when ``text`` has at least one non-whitespace character."""
    return bool(text and text.strip())
