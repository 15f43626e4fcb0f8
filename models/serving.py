"""Serving: run an encoder artifact through onnxruntime only (no torch, no torchvision).

One code path for CPU and GPU: the sessions are created with the requested execution providers that
this onnxruntime build actually has (``onnxruntime-gpu`` exposes ``CUDAExecutionProvider``; the CPU
package does not), CPU always last as the fallback.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from threadpoolctl import ThreadpoolController

from coldstart.errors import ArtifactError, InvalidInputError
from coldstart.settings import get_settings
from models.artifact import Manifest, read_manifest, resolve_artifact
from models.base import F32, EncoderSpec, FeatureBatch, ItemEncoder, l2_normalize
from models.preprocess import ImagePreprocessor, TextTokenizer
from models.representation import FILE as REPRESENTATION_FILE
from models.representation import Representation

log = logging.getLogger(__name__)

DEFAULT_PROVIDERS = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def available_providers(requested: list[str] | None = None) -> list[str]:
    """The requested providers this onnxruntime build has, in order, with CPU appended as fallback."""
    # deferred import: onnxruntime
    import onnxruntime as ort

    have = set(ort.get_available_providers())
    chosen = [p for p in (requested or DEFAULT_PROVIDERS) if p in have]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen


def make_session(path: Path, providers: list[str] | None = None, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` on the best available providers.

    Parameters
    ----------
    threads
        Intra-op threads (``None`` = onnxruntime's default, all cores).

    Raises
    ------
    ArtifactError
        The graph cannot be loaded.
    """
    # deferred import: onnxruntime
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads is not None:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=available_providers(providers))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph exceptions
        raise ArtifactError(f"cannot load ONNX graph {path}: {exc}") from exc


class OnnxItemEncoder(ItemEncoder):
    """An :class:`ItemEncoder` running an artifact's ONNX graphs with onnxruntime.

    Parameters
    ----------
    path
        Artifact directory (holding ``manifest.json``).
    providers
        onnxruntime execution providers in order of preference (unavailable ones are skipped).
    batch_size
        Maximum items per session call.
    threads
        Intra-op threads per session (``None`` = onnxruntime default).
    verify
        Re-hash the artifact files against the manifest before loading.
    """

    def __init__(
        self,
        path: Path,
        providers: list[str] | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        verify: bool = True,
    ) -> None:
        manifest = read_manifest(path, verify=verify)
        tok = manifest.tokenizer
        spec = EncoderSpec(
            version=manifest.version,
            kind=manifest.kind,
            preprocessor=ImagePreprocessor.from_dict(manifest.preprocess),
            tokenizer=TextTokenizer(path / tok.file, tok.max_tokens, tok.pad_to, tok.pad_id, tok.pad_length),
            image_dim=manifest.image_dim,
            text_dim=manifest.text_dim,
            shared_dim=manifest.shared_dim,
            item_dim=manifest.item_dim,
        )
        super().__init__(spec, batch_size=batch_size)
        self.path = path
        self.manifest: Manifest = manifest
        self._image = make_session(path / "image_tower.onnx", providers, threads)
        self._text = make_session(path / "text_tower.onnx", providers, threads)
        self._item = make_session(path / "item_tower.onnx", providers, threads)
        self._text_inputs = {i.name for i in self._text.get_inputs()}
        # the served vector: the item tower's output, or the weighted blocks chosen at training
        self.representation: Representation | None = (
            Representation.load(path) if REPRESENTATION_FILE in manifest.files else None
        )
        # found once: building a limit from scratch scans the loaded libraries (~3 ms a call)
        self._blas = ThreadpoolController() if self.representation is not None else None
        self.providers: list[str] = list(self._image.get_providers())

    def with_max_tokens(self, max_tokens: int) -> OnnxItemEncoder:
        """Change the text token cap (throughput knob) in place; returns ``self``.

        Raises
        ------
        InvalidInputError
            ``max_tokens`` exceeds what the text tower accepts.
        """
        tok = self.manifest.tokenizer
        limit = tok.pad_length if tok.pad_to == "max" and tok.pad_length else 512
        if not 2 <= max_tokens <= limit:
            raise InvalidInputError("max_tokens", max_tokens, f"must be in [2, {limit}]")
        tokenizer = TextTokenizer(self.path / tok.file, max_tokens, tok.pad_to, tok.pad_id, tok.pad_length)
        self.spec = dataclasses.replace(self.spec, tokenizer=tokenizer)
        return self

    def _encode_images(self, pixels: F32) -> tuple[F32, F32]:
        feat, emb = self._image.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.float32)})
        return np.asarray(feat, dtype=np.float32), l2_normalize(np.asarray(emb, dtype=np.float32))

    def _encode_texts(
        self, input_ids: NDArray[np.int64], attention_mask: NDArray[np.int64]
    ) -> tuple[F32, F32]:
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask}
        feat, emb = self._text.run(None, {k: v for k, v in feeds.items() if k in self._text_inputs})
        return np.asarray(feat, dtype=np.float32), l2_normalize(np.asarray(emb, dtype=np.float32))

    def _serve(self, tower: F32, features: FeatureBatch, rows: NDArray[np.int64], texts: list[str]) -> F32:
        if self.representation is None or self._blas is None:
            return tower
        rep = self.representation
        # one BLAS thread: onnxruntime's own thread pool is still spinning on the cores right after a
        # run, and a second pool fighting it made the whole encode ~13% slower (benchmarks/encode.py)
        with self._blas.limit(limits=1, user_api="blas"):
            return rep.compose_items(
                rep.item_blocks(
                    tower,
                    features.image_feat[rows],
                    features.text_feat[rows],
                    features.image_ok[rows],
                    features.text_ok[rows],
                    texts,
                )
            )

    def _encode_items(self, image_feat: F32, text_feat: F32, image_ok: F32, text_ok: F32) -> F32:
        (out,) = self._item.run(
            None,
            {
                "image_feat": np.ascontiguousarray(image_feat, dtype=np.float32),
                "text_feat": np.ascontiguousarray(text_feat, dtype=np.float32),
                "image_ok": np.ascontiguousarray(image_ok, dtype=np.float32),
                "text_ok": np.ascontiguousarray(text_ok, dtype=np.float32),
            },
        )
        return np.asarray(out, dtype=np.float32)


def load_encoder(
    path: Path | None = None,
    providers: list[str] | None = None,
    *,
    batch_size: int | None = None,
    threads: int | None = None,
    verify: bool = True,
) -> ItemEncoder:
    """Load an encoder artifact for serving.

    Parameters
    ----------
    path
        An artifact directory, or a root of versioned artifacts (newest taken). ``None``: the settings'
        ``models.artifact`` if set, else the newest artifact under ``models.artifacts_dir``.
    providers
        onnxruntime providers in preference order; ``None`` = the settings' ``models.providers``
        (CUDA when present, else CPU).

    Raises
    ------
    NotFoundError
        No artifact found.
    ArtifactError
        Corrupt or incompatible artifact.
    """

    settings = get_settings().models
    resolved = resolve_artifact(path if path is not None else settings.artifact, settings.artifacts_dir)
    return OnnxItemEncoder(
        resolved,
        providers=providers if providers is not None else list(settings.providers),
        batch_size=batch_size or settings.batch_size,
        threads=threads,
        verify=verify,
    )
