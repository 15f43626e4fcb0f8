"""Versioned encoder artifacts: a directory of ONNX graphs, a tokenizer and a ``manifest.json``.

Layout of one artifact (``<artifacts_dir>/<version>/``)::

    manifest.json        Manifest (below)
    image_tower.onnx     pixels (B,3,S,S) f32 -> image_feat (B,Di), image_emb (B,shared) unit-norm
    text_tower.onnx      input_ids, attention_mask (B,T) i64 -> text_feat (B,Dt), text_emb (B,shared)
    item_tower.onnx      image_feat, text_feat, image_ok (B,), text_ok (B,) f32 -> item_vector (B,item_dim)
    tokenizer.json       HF tokenizers file (serving tokenizes with it, no torch)
    checkpoint.pt        torch state for re-export (heads, item tower, random backbones)
    users.npz            optional: learned user vectors (user_ids, vectors (U, item_dim))
    representation.npz   optional: the served blocks (models/representation.py); without it the
                         served item vector is the item tower's output (item_dim = T)
    warmup.npz           optional: the learner's warm-up calibration (models/warmup/served.py)

The version is ``<kind>-<UTC timestamp>-<content hash prefix>``; every vector the artifact produces
carries it. This module never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from coldstart.errors import ArtifactError, NotFoundError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
ONNX_FILES = ("image_tower.onnx", "text_tower.onnx", "item_tower.onnx")


class TokenizerSpec(BaseModel):
    """How serving builds text inputs."""

    model_config = ConfigDict(extra="forbid")

    file: str = "tokenizer.json"
    max_tokens: int
    pad_to: Literal["longest", "max"]
    pad_id: int = 0
    pad_length: int | None = None


class TrainingData(BaseModel):
    """Where the trainable parts were fitted (fingerprint = sha256 of the catalog files)."""

    model_config = ConfigDict(extra="forbid")

    fingerprint: str
    source: str = ""
    n_items: int = 0
    n_interactions: int = 0


class Manifest(BaseModel):
    """``manifest.json`` of an artifact.

    Parameters
    ----------
    version
        ``<kind>-<YYYYmmddTHHMMSSZ>-<content_hash[:10]>``.
    kind
        Encoder kind (``offline`` or ``open_clip``); ``encoder`` holds its full config.
    content_hash
        sha256 over the sorted ``(name, sha256)`` pairs of ``files``.
    metrics
        Training/evaluation metrics (floats), e.g. contrastive loss, retrieval recall, NDCG.
    item_tower
        Where the item tower came from and its config (``source`` names the class).
    representation
        The served blocks, their weights and the validation scores that chose them (the model card's
        selection record); empty when the tower output is served as is.
    warmup
        The warm-up calibrated and validated on the training catalog (``warmup.npz`` holds its
        calibration, see ``models/warmup/served.py``); empty when trained without one.
    """

    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    version: str
    kind: str
    encoder: dict[str, Any]
    image_dim: int
    text_dim: int
    shared_dim: int
    item_dim: int
    preprocess: dict[str, Any]
    tokenizer: TokenizerSpec
    files: dict[str, str]
    content_hash: str
    training_data: TrainingData | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    item_tower: dict[str, Any] = Field(default_factory=dict)
    representation: dict[str, Any] = Field(default_factory=dict)
    warmup: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime
    notes: str = ""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_hash(files: dict[str, str]) -> str:
    """sha256 over sorted ``name:sha256`` lines."""
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(f"{name}:{files[name]}\n".encode())
    return h.hexdigest()


def finalize_artifact(staging: Path, artifacts_dir: Path, fields: dict[str, Any]) -> Path:
    """Hash the files in ``staging``, write the manifest and move it to ``artifacts_dir/<version>``.

    Parameters
    ----------
    staging
        Directory holding the artifact files (moved, not copied).
    artifacts_dir
        Root of versioned artifacts (created if missing).
    fields
        Manifest fields other than ``version``, ``files``, ``content_hash``, ``created_at``.

    Returns
    -------
    Path
        The final artifact directory.
    """
    files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file() and p.name != MANIFEST}
    missing = [f for f in (*ONNX_FILES, "tokenizer.json") if f not in files]
    if missing:
        raise ArtifactError(f"artifact staging dir {staging} lacks {missing}")
    digest = content_hash(files)
    created = datetime.now(UTC)
    base = f"{fields['kind']}-{created:%Y%m%dT%H%M%S}Z-{digest[:10]}"
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    # a version is never replaced (a serving process may be using it): the same content exported twice
    # within one second gets a suffix
    version, n = base, 1
    while (artifacts_dir / version).exists():
        n += 1
        version = f"{base}-{n}"
    manifest = Manifest(version=version, files=files, content_hash=digest, created_at=created, **fields)
    (staging / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    final = artifacts_dir / version
    try:
        os.replace(staging, final)
    except OSError:  # different filesystems
        shutil.copytree(staging, final)
        shutil.rmtree(staging, ignore_errors=True)
    return final


def read_manifest(path: Path, verify: bool = False) -> Manifest:
    """Read and validate ``path/manifest.json``; with ``verify``, re-hash every file.

    Raises
    ------
    NotFoundError
        No manifest at ``path``.
    ArtifactError
        Malformed manifest, unsupported format, missing or modified files.
    """
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise NotFoundError(f"no encoder artifact at {path} (missing {MANIFEST})")
    try:
        manifest = Manifest.model_validate_json(mpath.read_text())
    except (ValidationError, ValueError) as exc:
        raise ArtifactError(f"malformed manifest {mpath}: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactError(
            f"artifact {path} has format_version={manifest.format_version}, "
            f"this coldstart reads {FORMAT_VERSION}"
        )
    for name, digest in manifest.files.items():
        fpath = path / name
        if not fpath.is_file():
            raise ArtifactError(f"artifact {path} is missing {name}")
        if verify and sha256_file(fpath) != digest:
            raise ArtifactError(f"artifact {path}: {name} does not match its manifest hash (modified?)")
    return manifest


def resolve_artifact(path: Path | None, artifacts_dir: Path) -> Path:
    """The artifact directory to load.

    ``path`` may be an artifact directory (holding ``manifest.json``) or a root of versioned artifacts
    (the newest by ``created_at`` is taken); ``None`` means ``artifacts_dir``.

    Raises
    ------
    NotFoundError
        Nothing loadable there.
    """
    root = path if path is not None else artifacts_dir
    if (root / MANIFEST).is_file():
        return root
    if not root.is_dir():
        raise NotFoundError(f"no encoder artifact at {root}: run `coldstart models train` first")
    candidates: list[tuple[datetime, Path]] = []
    for child in root.iterdir():
        if (child / MANIFEST).is_file():
            try:
                candidates.append((read_manifest(child).created_at, child))
            except ArtifactError as exc:
                log.warning("skipping unreadable artifact %s: %s", child, exc)
                continue
    if not candidates:
        raise NotFoundError(f"no encoder artifact under {root}: run `coldstart models train` first")
    return max(candidates)[1]


def save_users(path: Path, user_ids: list[str], vectors: NDArray[np.float32]) -> None:
    """Write learned user vectors ``(U, item_dim)`` to ``path/users.npz``."""
    if len(user_ids) != vectors.shape[0]:
        raise ArtifactError(f"{len(user_ids)} user ids for {vectors.shape[0]} user vectors")
    np.savez(path / "users.npz", user_ids=np.asarray(user_ids, dtype=str), vectors=vectors.astype(np.float32))


def load_users(path: Path) -> tuple[list[str], NDArray[np.float32]]:
    """Learned user vectors of an artifact: ``(user_ids, (U, item_dim) float32)``.

    Raises
    ------
    NotFoundError
        The artifact was built without user vectors (e.g. a tiny test artifact).
    """
    f = path / "users.npz"
    if not f.is_file():
        raise NotFoundError(f"artifact {path} has no learned user vectors")
    with np.load(f) as data:
        return [str(u) for u in data["user_ids"]], data["vectors"].astype(np.float32)


def write_json(path: Path, obj: Any) -> None:
    """Pretty JSON file."""
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
