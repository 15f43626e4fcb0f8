"""ONNX export of the towers and the item tower into a versioned artifact, with a parity check.

Uses the TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``): on torch 2.13 it exports
EfficientNet-Lite, BERT (eager attention) and open_clip's ViT/text transformer (with the
``nn.MultiheadAttention`` fast path disabled) with dynamic batch (and dynamic sequence for BERT).
Every export is verified against torch on a sample batch: max abs difference of the normalised
embeddings must be <= ``PARITY_ATOL``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import math
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from coldstart.errors import ArtifactError, ConfigError
from models.artifact import TokenizerSpec, TrainingData, finalize_artifact, save_users
from models.config import EncoderConfig, OfflineEncoderConfig, OpenClipEncoderConfig
from models.representation import Representation
from models.towers import Towers, build_towers
from models.warmup.served import ServedWarmup

log = logging.getLogger(__name__)

OPSET = 17
PARITY_ATOL = 1e-4
CHECKPOINT = "checkpoint.pt"


@contextlib.contextmanager
def _export_mode() -> Iterator[None]:
    prev = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(prev)


def _sample_inputs(towers: Towers, seed: int = 0) -> dict[str, np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    size = towers.preprocessor.size
    pixels = rng.standard_normal((3, 3, size, size)).astype(np.float32)
    texts = ["a red shoe", "an old science-fiction film about robots and a lost city", "x"]
    ids, mask = towers.text_tokenizer()(texts)
    return {"pixels": pixels, "input_ids": ids, "attention_mask": mask}


def export_onnx(towers: Towers, item_tower: nn.Module | None, out_dir: Path) -> dict[str, float]:
    """Export ``image_tower.onnx``, ``text_tower.onnx``, ``item_tower.onnx`` and ``tokenizer.json``.

    With ``item_tower=None`` only the two towers (and the tokenizer) are exported (feature extraction).

    Returns
    -------
    dict
        Parity of each graph against torch (max abs diff), ``parity/<graph>``.

    Raises
    ------
    ArtifactError
        An exported graph differs from torch by more than ``PARITY_ATOL``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    towers.eval()
    sample = _sample_inputs(towers)
    pixels = torch.from_numpy(sample["pixels"])
    ids = torch.from_numpy(sample["input_ids"])
    mask = torch.from_numpy(sample["attention_mask"])
    text_axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}}
    if towers.pad_to == "longest":
        text_axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    with _export_mode():
        torch.onnx.export(
            towers.image,
            (pixels[:2],),
            str(out_dir / "image_tower.onnx"),
            input_names=["pixels"],
            output_names=["image_feat", "image_emb"],
            dynamic_axes={"pixels": {0: "batch"}, "image_feat": {0: "batch"}, "image_emb": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        torch.onnx.export(
            towers.text,
            (ids[:2], mask[:2]),
            str(out_dir / "text_tower.onnx"),
            input_names=["input_ids", "attention_mask"],
            output_names=["text_feat", "text_emb"],
            dynamic_axes={**text_axes, "text_feat": {0: "batch"}, "text_emb": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
        img_feat, img_emb = towers.image(pixels)
        txt_feat, txt_emb = towers.text(ids, mask)
        iok = torch.tensor([1.0, 0.0, 1.0])
        tok = torch.tensor([1.0, 1.0, 0.0])
        item_vec = None
    if item_tower is not None:
        item_tower.eval()
        with _export_mode():
            _export_item_tower(item_tower, (img_feat[:2], txt_feat[:2], iok[:2], tok[:2]), out_dir)
            item_vec = item_tower(img_feat, txt_feat, iok, tok)
    towers.tokenizer.save(str(out_dir / "tokenizer.json"))
    item_in = (img_feat, txt_feat, iok, tok)
    return _check_parity(out_dir, sample, [img_feat, img_emb], [txt_feat, txt_emb], item_in, item_vec)


def _export_item_tower(item_tower: nn.Module, args: tuple[torch.Tensor, ...], out_dir: Path) -> None:
    torch.onnx.export(
        item_tower,
        args,
        str(out_dir / "item_tower.onnx"),
        input_names=["image_feat", "text_feat", "image_ok", "text_ok"],
        output_names=["item_vector"],
        dynamic_axes={
            "image_feat": {0: "batch"},
            "text_feat": {0: "batch"},
            "image_ok": {0: "batch"},
            "text_ok": {0: "batch"},
            "item_vector": {0: "batch"},
        },
        opset_version=OPSET,
        dynamo=False,
    )


def _check_parity(
    out_dir: Path,
    sample: dict[str, np.ndarray[Any, Any]],
    image_out: list[torch.Tensor],
    text_out: list[torch.Tensor],
    item_in: tuple[torch.Tensor, ...],
    item_vec: torch.Tensor | None,
) -> dict[str, float]:
    # deferred import: onnxruntime
    from models.serving import make_session

    parity: dict[str, float] = {}
    checks: list[tuple[str, dict[str, np.ndarray[Any, Any]], list[torch.Tensor]]] = [
        ("image_tower.onnx", {"pixels": sample["pixels"]}, image_out),
        (
            "text_tower.onnx",
            {"input_ids": sample["input_ids"], "attention_mask": sample["attention_mask"]},
            text_out,
        ),
    ]
    if item_vec is not None:
        names = ("image_feat", "text_feat", "image_ok", "text_ok")
        feeds = {n: t.numpy() for n, t in zip(names, item_in, strict=True)}
        checks.append(("item_tower.onnx", feeds, [item_vec]))
    for name, feeds, expected in checks:
        sess = make_session(out_dir / name, ["CPUExecutionProvider"])
        wanted = {i.name for i in sess.get_inputs()}
        outs = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
        # unit-norm embeddings are compared absolutely; unnormalised features (scale ~ tens for CLIP)
        # relative to their largest magnitude
        worst = 0.0
        for o, e in zip(outs, expected, strict=True):
            ref = e.numpy()
            worst = max(worst, float(np.abs(o - ref).max()) / max(1.0, float(np.abs(ref).max())))
        parity[f"parity/{name.removesuffix('.onnx')}"] = worst
        if worst > PARITY_ATOL:
            raise ArtifactError(f"ONNX export of {name} differs from torch by {worst:.2e} (> {PARITY_ATOL})")
    return parity


def item_tower_info(item_tower: nn.Module) -> dict[str, Any]:
    """What is needed to rebuild ``item_tower`` for re-export (class path, dims, config)."""
    cls = type(item_tower)
    info: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    for attr in ("image_dim", "text_dim", "item_dim"):
        if hasattr(item_tower, attr):
            info[attr] = int(getattr(item_tower, attr))
    cfg = getattr(item_tower, "config", None)
    if cfg is not None and hasattr(cfg, "model_dump"):
        info["config"] = cfg.model_dump(mode="json")
    return info


def rebuild_item_tower(info: dict[str, Any], state: dict[str, torch.Tensor]) -> nn.Module:
    """Inverse of :func:`item_tower_info` + ``state_dict``.

    Raises
    ------
    ArtifactError
        The class cannot be imported or the state does not fit.
    """
    module_name, _, cls_name = str(info["class"]).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ArtifactError(f"cannot import item tower class {info['class']}: {exc}") from exc
    kwargs: dict[str, Any] = {}
    if "config" in info:
        cfg_cls = getattr(importlib.import_module(module_name), "ItemTowerConfig", None)
        if cfg_cls is not None:
            kwargs["config"] = cfg_cls(**info["config"])
    try:
        module: nn.Module = cls(info["image_dim"], info["text_dim"], **kwargs)
        module.load_state_dict(state)
    except (TypeError, RuntimeError, KeyError) as exc:
        raise ArtifactError(f"cannot rebuild item tower {info['class']}: {exc}") from exc
    return module.eval()


def save_checkpoint(path: Path, towers: Towers, item_tower: nn.Module, seed: int = 0) -> None:
    """Torch state needed to re-export: encoder config, heads, item tower, random backbones."""
    state: dict[str, Any] = {
        "encoder": towers.config.model_dump(mode="json"),
        "seed": seed,
        "towers": towers.heads_state(),
        "item_tower_info": item_tower_info(item_tower),
        "item_tower": item_tower.state_dict(),
    }
    if not towers.backbone_is_reproducible:
        state["towers"].update(towers.backbone_state())
    torch.save(state, path)


def encoder_config_from_dict(data: dict[str, Any]) -> EncoderConfig:
    """Parse a stored encoder config dict."""
    kind = data.get("type")
    if kind == "offline":
        return OfflineEncoderConfig(**data)
    if kind == "open_clip":
        return OpenClipEncoderConfig(**data)
    raise ConfigError(f"encoder type={kind!r}: expected 'offline' or 'open_clip'")


def load_checkpoint(path: Path) -> tuple[Towers, nn.Module, int]:
    """Rebuild towers and item tower from a ``checkpoint.pt``.

    Raises
    ------
    ArtifactError
        Missing or incompatible checkpoint.
    """
    if not path.is_file():
        raise ArtifactError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        config = encoder_config_from_dict(state["encoder"])
    except (KeyError, RuntimeError, OSError) as exc:
        raise ArtifactError(f"unreadable checkpoint {path}: {exc}") from exc
    towers = build_towers(config, seed=int(state.get("seed", 0)))
    towers.load_state(state["towers"])
    item_tower = rebuild_item_tower(state["item_tower_info"], state["item_tower"])
    return towers.eval(), item_tower, int(state.get("seed", 0))


def build_artifact(
    towers: Towers,
    item_tower: nn.Module,
    artifacts_dir: Path,
    *,
    training_data: TrainingData | None = None,
    metrics: dict[str, float] | None = None,
    users: tuple[list[str], np.ndarray[Any, Any]] | None = None,
    seed: int = 0,
    notes: str = "",
    representation: Representation | None = None,
    warmup: ServedWarmup | None = None,
) -> Path:
    """Export everything into a new versioned artifact under ``artifacts_dir``; returns its path.

    With ``representation``, the served item vector is its weighted blocks (``item_dim`` is their
    width) and ``users`` must be in that space."""
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=artifacts_dir))
    try:
        parity = export_onnx(towers, item_tower, staging)
        save_checkpoint(staging / CHECKPOINT, towers, item_tower, seed)
        if users is not None:
            save_users(staging, users[0], users[1])
        item_dim = int(getattr(item_tower, "item_dim", 0)) or _probe_item_dim(item_tower, towers)
        card: dict[str, Any] = {}
        if representation is not None:
            representation.save(staging)
            card = {
                "blocks": [dataclasses.asdict(b) for b in representation.blocks],
                "tower_dim": item_dim,
                **representation.info,
            }
            item_dim = representation.dim
        if warmup is not None:
            warmup.save(staging)
        fields: dict[str, Any] = {
            "kind": towers.config.type,
            "encoder": towers.config.model_dump(mode="json"),
            "image_dim": towers.image_dim,
            "text_dim": towers.text_dim,
            "shared_dim": towers.shared_dim,
            "item_dim": item_dim,
            "preprocess": towers.preprocessor.to_dict(),
            "tokenizer": TokenizerSpec(
                max_tokens=towers.max_tokens,
                pad_to=towers.pad_to,
                pad_id=towers.pad_id,
                pad_length=towers.pad_length,
            ),
            "training_data": training_data,
            # JSON has no NaN/inf: non-finite metrics (e.g. "no validation") are left out
            "metrics": {k: float(v) for k, v in {**(metrics or {}), **parity}.items() if math.isfinite(v)},
            "item_tower": item_tower_info(item_tower),
            "representation": card,
            "warmup": warmup.card() if warmup is not None else {},
            "notes": notes,
        }
        return finalize_artifact(staging, artifacts_dir, fields)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _probe_item_dim(item_tower: nn.Module, towers: Towers) -> int:
    with torch.no_grad():
        out = item_tower(
            torch.zeros(1, towers.image_dim), torch.zeros(1, towers.text_dim), torch.ones(1), torch.ones(1)
        )
    return int(out.shape[1])
