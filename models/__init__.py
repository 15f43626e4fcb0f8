"""models: content encoders (CLIP-style towers, ONNX export, onnxruntime serving), item tower, warm-up.

Serving API (no torch imported)::

    from models import load_encoder
    enc = load_encoder()                      # newest artifact under settings.models.artifacts_dir
    embs = enc.encode([ItemContent("sku-1", "red leather boots", image_bytes)])
    q = enc.encode_text_query(["boots"])      # (1, enc.shared_dim)

Tests of other areas build a tiny random artifact with :func:`models.testing.build_tiny_artifact`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from models.records import ItemContent, ItemEmbedding

if TYPE_CHECKING:
    from models.base import ItemEncoder
    from models.serving import load_encoder

__all__ = ["ItemContent", "ItemEmbedding", "ItemEncoder", "load_encoder"]


def __getattr__(name: str) -> Any:
    # Lazy: importing models (e.g. for settings) must not pull onnxruntime/PIL/tokenizers.
    if name == "load_encoder":
        # deferred import: onnxruntime, the encoder stack
        from models.serving import load_encoder

        return load_encoder
    if name == "ItemEncoder":
        # deferred import: the encoder stack
        from models.base import ItemEncoder

        return ItemEncoder
    raise AttributeError(f"module 'models' has no attribute {name!r}")
