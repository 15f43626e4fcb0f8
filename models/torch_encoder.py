"""An :class:`~models.base.ItemEncoder` running the torch towers (training, feature extraction, parity).

Serving uses :class:`models.serving.OnnxItemEncoder`; this runtime exists so the same public methods
(and their rules) can be checked against torch, and so features can be extracted before any export.
"""

from __future__ import annotations

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from models.base import F32, EncoderSpec, ItemEncoder, l2_normalize
from models.towers import Towers


class TorchItemEncoder(ItemEncoder):
    """Torch runtime of the encoder.

    Parameters
    ----------
    towers
        Built (and possibly trained) towers.
    item_tower
        Module with ``forward(image_feat, text_feat, image_ok, text_ok) -> (B, item_dim)``; ``None``
        gives ``item_dim=0`` vectors (feature extraction only).
    version
        Version string stamped on vectors.
    """

    def __init__(
        self,
        towers: Towers,
        item_tower: nn.Module | None = None,
        version: str = "torch",
        batch_size: int = 32,
    ) -> None:
        towers.eval()
        item_dim = 0
        if item_tower is not None:
            item_tower.eval()
            item_dim = int(getattr(item_tower, "item_dim", 0))
            if not item_dim:
                with torch.no_grad():
                    probe = item_tower(
                        torch.zeros(1, towers.image_dim),
                        torch.zeros(1, towers.text_dim),
                        torch.ones(1),
                        torch.ones(1),
                    )
                item_dim = int(probe.shape[1])
        spec = EncoderSpec(
            version=version,
            kind=towers.config.type,
            preprocessor=towers.preprocessor,
            tokenizer=towers.text_tokenizer(),
            image_dim=towers.image_dim,
            text_dim=towers.text_dim,
            shared_dim=towers.shared_dim,
            item_dim=item_dim,
        )
        super().__init__(spec, batch_size=batch_size)
        self.towers = towers
        self.item_tower = item_tower

    @torch.no_grad()
    def _encode_images(self, pixels: F32) -> tuple[F32, F32]:
        feat, emb = self.towers.image(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)))
        return feat.numpy().astype(np.float32), l2_normalize(emb.numpy().astype(np.float32))

    @torch.no_grad()
    def _encode_texts(
        self, input_ids: NDArray[np.int64], attention_mask: NDArray[np.int64]
    ) -> tuple[F32, F32]:
        feat, emb = self.towers.text(torch.from_numpy(input_ids), torch.from_numpy(attention_mask))
        return feat.numpy().astype(np.float32), l2_normalize(emb.numpy().astype(np.float32))

    @torch.no_grad()
    def _encode_items(self, image_feat: F32, text_feat: F32, image_ok: F32, text_ok: F32) -> F32:
        if self.item_tower is None:
            return np.zeros((image_feat.shape[0], 0), dtype=np.float32)
        out = self.item_tower(
            torch.from_numpy(image_feat),
            torch.from_numpy(text_feat),
            torch.from_numpy(image_ok),
            torch.from_numpy(text_ok),
        )
        return np.asarray(out.numpy(), dtype=np.float32)
