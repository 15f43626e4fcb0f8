"""`coldstart models ...` commands: train, export (and the evaluation commands of models/eval_cli.py).

Heavy imports (torch, transformers, open_clip) happen inside the commands.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from coldstart.errors import InvalidInputError
from coldstart.settings import get_settings
from models import eval_cli
from models.artifact import TrainingData, load_users, read_manifest, resolve_artifact
from models.catalog import Catalog
from models.config import OfflineEncoderConfig, OpenClipEncoderConfig
from models.warmup import cli as warmup_cli
from models.warmup.served import load_served_warmup

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from numpy.typing import NDArray

    from models.blend import BlendRanker
    from models.catalog import Catalog
    from models.config import EncoderConfig
    from models.feature_table import FeatureTable
    from models.item_tower import ItemTowerConfig, TrainedItemTower
    from models.warmup.served import ServedWarmup

app = typer.Typer(no_args_is_help=True)
log = logging.getLogger(__name__)


def _encoder_config(
    encoder: str | None,
    model_name: str | None,
    pretrained: str | None,
    shared_dim: int,
    max_text_tokens: int | None,
    tiny: bool,
) -> EncoderConfig:

    if encoder is None:
        if tiny:
            encoder = "offline"
        else:
            return get_settings().models.encoder
    if encoder == "offline":
        if tiny:
            # deferred import: torch, onnx
            from models.testing import TINY_OFFLINE

            return TINY_OFFLINE
        return OfflineEncoderConfig(shared_dim=shared_dim, max_text_tokens=max_text_tokens or 256)
    if encoder == "open_clip":
        if tiny:
            # deferred import: torch, onnx
            from models.testing import TINY_OPEN_CLIP

            return TINY_OPEN_CLIP
        return OpenClipEncoderConfig(
            model_name=model_name or "ViT-B-32", pretrained=pretrained, max_text_tokens=max_text_tokens
        )
    raise InvalidInputError("--encoder", encoder, "expected 'offline' or 'open_clip'")


def _fingerprint(catalog_dir: Path) -> str:
    h = hashlib.sha256()
    for name in ("items.csv", "interactions.csv"):
        path = catalog_dir / name
        if path.is_file():
            h.update(name.encode())
            with path.open("rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
    return h.hexdigest()


@app.command("train")
def train_command(
    catalog: Annotated[Path, typer.Option(help="Catalog dir: items.csv, interactions.csv, images.")],
    out: Annotated[
        Path | None, typer.Option(help="Artifacts root (default: settings models.artifacts_dir).")
    ] = None,
    encoder: Annotated[
        str | None, typer.Option(help="Encoder kind: offline | open_clip (default: settings models.encoder).")
    ] = None,
    model_name: Annotated[str | None, typer.Option(help="open_clip model name.")] = None,
    pretrained: Annotated[
        str | None, typer.Option(help="open_clip pretrained tag or local checkpoint.")
    ] = None,
    shared_dim: Annotated[int, typer.Option(help="Shared image/text space dimension (offline).")] = 256,
    max_text_tokens: Annotated[int | None, typer.Option(help="Text token cap (throughput knob).")] = None,
    item_dim: Annotated[int, typer.Option(help="Item tower output dimension.")] = 128,
    positive_threshold: Annotated[
        float | None, typer.Option(help="Interactions with value >= this are positives (default: all).")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Max epochs of projection-head training.")] = 40,
    tower_epochs: Annotated[int, typer.Option(help="Max epochs of item-tower training.")] = 30,
    val_fraction: Annotated[
        float,
        typer.Option(
            help="Share of items held out as cold-validation for the item tower's early stopping and "
            "image-stage selection (0 = train on every item for --tower-epochs)."
        ),
    ] = 0.15,
    seed: Annotated[int, typer.Option(help="Seed of every random choice.")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads.")] = 2,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache dir (default: settings).")] = None,
    tiny: Annotated[bool, typer.Option(help="Tiny random towers (smoke tests only, no quality).")] = False,
    features_file: Annotated[
        Path | None,
        typer.Option("--features", help="Precomputed FeatureTable .npz of this catalog (same encoder)."),
    ] = None,
) -> None:
    """Train projection heads (CLIP loss) and the item tower on a catalog, export ONNX, write the manifest."""
    # deferred import: the encoder stack, torch
    import torch

    from models.export import build_artifact
    from models.feature_table import FeatureTable
    from models.features import extract_features
    from models.item_tower import ItemTowerConfig
    from models.projection import ProjectionTrainConfig, train_projection
    from models.towers import build_towers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(threads)
    settings = get_settings().models
    cfg = _encoder_config(encoder, model_name, pretrained, shared_dim, max_text_tokens, tiny)
    cat = Catalog.load(catalog)
    typer.echo(f"catalog {catalog}: {len(cat.items)} items, {len(cat.interactions)} interactions")
    contents = [it.content() for it in cat.items]
    if features_file is not None:
        features = FeatureTable.load(features_file).select([c.item_id for c in contents])
    else:
        features = extract_features(
            contents, cfg, cache_dir=cache_dir or settings.feature_cache_dir, progress=True, seed=seed
        )
    typer.echo(
        f"features: {len(features)} items, image_ok {int(features.image_ok.sum())}, "
        f"text_ok {int(features.text_ok.sum())}"
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        towers = build_towers(cfg, seed=seed)
    proj = train_projection(towers, features, ProjectionTrainConfig(epochs=epochs), seed=seed, progress=True)
    inter = cat.interactions
    if positive_threshold is not None:
        inter = inter[inter["value"] >= positive_threshold]
    titles = extract_features(
        [it.content(title_only=True) for it in cat.items],
        cfg,
        cache_dir=cache_dir or settings.feature_cache_dir,
        progress=True,
        seed=seed,
    )
    tower_cfg = ItemTowerConfig(item_dim=item_dim, max_epochs=tower_epochs)
    trained = _train_tower(features, titles, inter[["user_id", "item_id"]], tower_cfg, seed, val_fraction)
    metrics = {**proj.metrics, **{f"item_tower/{k}": float(v) for k, v in trained.metrics.items()}}
    selected = _select_representation(features, cat, inter, trained, seed, val_fraction)
    representation, warmup = (selected[0].representation(), selected[1]) if selected else (None, None)
    users = selected[0].user_vectors() if selected else (trained.user_ids, trained.user_embeddings)
    if representation is not None:
        shown = ", ".join(f"{k} {v:g}" for k, v in representation.weights().items())
        typer.echo(f"served representation (block weights): {shown}")
    path = build_artifact(
        towers,
        trained.module,
        out or settings.artifacts_dir,
        training_data=TrainingData(
            fingerprint=_fingerprint(catalog),
            source=str(catalog),
            n_items=len(cat.items),
            n_interactions=len(inter),
        ),
        metrics=metrics,
        users=users,
        seed=seed,
        representation=representation,
        warmup=warmup,
    )
    typer.echo(json.dumps({"artifact": str(path), "version": path.name, "metrics": metrics}, indent=2))


@dataclass(frozen=True)
class _HeldOut:
    """The cold-validation split of ``coldstart models train`` (positives as strings)."""

    train_ids: list[str]
    val_ids: list[str]
    train_pos: pd.DataFrame  # user_id, item_id of training items (as given, duplicates kept)
    users: list[str]  # users with a positive on both sides
    relevant: NDArray[np.bool_]  # (users, val_ids): their validation positives


def _validation_split(
    item_ids: Sequence[str], positives: pd.DataFrame, seed: int, val_fraction: float
) -> _HeldOut:
    """A seeded ``val_fraction`` of the items held out; the tower's early stopping and the served
    representation's selection both use it."""
    # deferred import: torch
    from models.eval_protocol import relevance_matrix, split_items

    split = split_items(item_ids, seed, (1.0 - val_fraction, val_fraction, 0.0))
    train_ids = sorted([*split.train, *split.test])  # rounding may leave an item in "test": train on it
    pos = positives[["user_id", "item_id"]].astype(str)
    val_pos = pos[pos["item_id"].isin(set(split.val))]
    train_pos = pos[pos["item_id"].isin(set(train_ids))]
    users = sorted(set(val_pos["user_id"]) & set(train_pos["user_id"]))
    return _HeldOut(train_ids, split.val, train_pos, users, relevance_matrix(val_pos, users, split.val))


def _train_tower(
    features: FeatureTable,
    titles: FeatureTable,
    positives: pd.DataFrame,
    config: ItemTowerConfig,
    seed: int,
    val_fraction: float,
) -> TrainedItemTower:
    """Train the item tower; with ``val_fraction`` > 0, a seeded share of the items is held out as
    cold-validation (Recall@20 + NDCG@10 of their positives) for early stopping and the image stage."""
    # deferred import: torch
    from models.eval_protocol import validation_score
    from models.tower_training import train_item_tower

    if not 0.0 <= val_fraction < 1.0:
        raise InvalidInputError("val_fraction", val_fraction, "must be in [0, 1)")
    if val_fraction == 0.0:
        return train_item_tower(features, positives, config, seed, progress=True, short_text=titles)
    held = _validation_split(features.item_ids, positives, seed, val_fraction)
    train_feats = features.select(held.train_ids)
    val_feats = features.select(held.val_ids)
    if not held.users:
        log.warning("no user has a positive on both training and validation items: no early stopping")
        return train_item_tower(train_feats, held.train_pos, config, seed, progress=True, short_text=titles)
    users, relevant = held.users, held.relevant

    def validate(candidate: TrainedItemTower) -> float:
        index = candidate.user_index()
        user_vecs = candidate.user_embeddings[[index[u] for u in users]]
        return validation_score(user_vecs @ candidate.encode(val_feats).T, relevant)

    return train_item_tower(
        train_feats, held.train_pos, config, seed, validate=validate, progress=True, short_text=titles
    )


def _select_representation(
    features: FeatureTable,
    catalog: Catalog,
    interactions: pd.DataFrame,
    trained: TrainedItemTower,
    seed: int,
    val_fraction: float,
) -> tuple[BlendRanker, ServedWarmup | None] | None:
    """Choose the served representation (models/blend.py) and the warm-up (models/warmup/served.py)
    on the same cold-validation items as the tower's early stopping; ``None`` when there is no
    validation (``val_fraction`` 0 or no user with positives on both sides): the tower output is
    served as is, with no calibrated warm-up. ``interactions`` are the positives (already filtered
    by ``--positive-threshold``)."""
    # deferred import: torch
    from models.baselines import ItemSet, TrainSet
    from models.blend import BlendRanker
    from models.eval_protocol import as_features, validation_score
    from models.warmup.fit import fit_served_warmup

    if val_fraction == 0.0:
        return None
    held = _validation_split(features.item_ids, interactions[["user_id", "item_id"]], seed, val_fraction)
    train_pos = held.train_pos.drop_duplicates().reset_index(drop=True)
    if not held.users or train_pos.empty:
        log.warning("no cold-validation users: serving the item tower's output")
        return None
    texts = {it.item_id: it.full_text() for it in catalog.items}
    table = as_features(features)
    train = TrainSet(ItemSet(table.select(held.train_ids), [texts[i] for i in held.train_ids]), train_pos)
    val_items = ItemSet(table.select(held.val_ids), [texts[i] for i in held.val_ids])
    users, relevant = held.users, held.relevant
    blend = BlendRanker(trained, seed=seed)
    blend.fit(train, validate=lambda r: validation_score(r.score(users, val_items), relevant))
    user_ids, user_vecs = blend.user_vectors()
    every = ItemSet(table, [texts[i] for i in table.item_ids])
    try:
        warmup = fit_served_warmup(
            user_ids,
            user_vecs,
            table.item_ids,
            blend.item_vectors(every),
            train_pos,
            held.val_ids,
            interactions,
            threshold=-math.inf,  # every interaction given here is a positive
            seed=seed,
        )
    except InvalidInputError as exc:
        log.warning("no calibrated warm-up: %s", exc)
        warmup = None
    return blend, warmup


@app.command("export")
def export_command(
    artifact: Annotated[Path, typer.Option(help="Artifact dir (or root: newest) holding checkpoint.pt.")],
    out: Annotated[
        Path | None, typer.Option(help="Artifacts root for the new version (default: same root).")
    ] = None,
    max_text_tokens: Annotated[int | None, typer.Option(help="New text token cap.")] = None,
) -> None:
    """Re-export a trained checkpoint to ONNX as a new artifact version (e.g. after an upgrade)."""
    # deferred import: onnxruntime, torch
    from models.export import CHECKPOINT, build_artifact, load_checkpoint
    from models.representation import FILE as REPRESENTATION_FILE
    from models.representation import Representation

    src = resolve_artifact(artifact, artifact)
    manifest = read_manifest(src)
    towers, item_tower, seed = load_checkpoint(src / CHECKPOINT)
    if max_text_tokens is not None:
        towers.max_tokens = max_text_tokens
    representation = None
    if REPRESENTATION_FILE in manifest.files:
        representation = Representation.load(src)
        representation.info = {
            k: v for k, v in manifest.representation.items() if k not in ("blocks", "tower_dim")
        }
    warmup = load_served_warmup(src, manifest.warmup)
    users = None
    if (src / "users.npz").is_file():
        users = load_users(src)
    path = build_artifact(
        towers,
        item_tower,
        out or src.parent,
        training_data=manifest.training_data,
        metrics={k: v for k, v in manifest.metrics.items() if not k.startswith("parity/")},
        users=users,
        seed=seed,
        notes=f"re-exported from {manifest.version}",
        representation=representation,
        warmup=warmup,
    )
    typer.echo(json.dumps({"artifact": str(path), "version": path.name, "from": manifest.version}))


@app.command("info")
def info_command(
    artifact: Annotated[Path | None, typer.Option(help="Artifact dir or root (default: settings).")] = None,
    verify: Annotated[bool, typer.Option(help="Re-hash every file.")] = True,
) -> None:
    """Print an artifact's manifest (the one serving would load)."""

    settings = get_settings().models
    path = resolve_artifact(artifact or settings.artifact, settings.artifacts_dir)
    typer.echo(read_manifest(path, verify=verify).model_dump_json(indent=2))


eval_cli.register(app)
warmup_cli.register(app)
