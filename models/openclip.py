"""open_clip support: the guarded import (torchvision's C ops), model building and tokenizer conversion.

Only training and ONNX export import this module; serving never does (it runs the exported ONNX graphs
with the ``tokenizer.json`` written here).

open_clip imports torchvision, whose C ops do not load on the CPU torch wheel: see
:mod:`models.torchcompat`.
"""

from __future__ import annotations

import gzip
import importlib.resources
import os
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from coldstart.errors import ConfigError
from models.config import OpenClipEncoderConfig
from models.torchcompat import ensure_torchvision_importable


def import_open_clip() -> ModuleType:
    """Import open_clip (after making torchvision importable, see :mod:`models.torchcompat`).

    Raises
    ------
    ConfigError
        open_clip is not installed (``pip install -c constraints.txt 'coldstart[clip]'``).
    """
    ensure_torchvision_importable()
    try:
        # deferred import: open_clip
        import open_clip
    except ImportError as exc:
        raise ConfigError(
            "open_clip is not installed: pip install -c constraints.txt 'coldstart[clip]' (torch pinned)"
        ) from exc
    module: ModuleType = open_clip
    return module


@dataclass
class OpenClipParts:
    """A built open_clip model with what serving needs to reproduce its inputs."""

    model: nn.Module
    preprocess: dict[str, Any]
    context_length: int
    tokenizer: Any  # tokenizers.Tokenizer
    pad_id: int


def build_open_clip(config: OpenClipEncoderConfig) -> OpenClipParts:
    """Build the model (eval mode) and a ``tokenizers`` tokenizer equivalent to open_clip's own.

    Raises
    ------
    ConfigError
        Unknown model name, unreadable checkpoint, or a tokenizer kind that cannot be exported.
    """
    # never download at run time: pretrained tags resolve from the local HF/open_clip cache only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    open_clip = import_open_clip()
    if config.model_cfg is not None:
        cfg = dict(config.model_cfg)
        try:
            model = open_clip.CLIP(**cfg)
        except TypeError as exc:
            raise ConfigError(f"model_cfg is not a valid open_clip CLIP config: {exc}") from exc
        if config.pretrained:
            _load_checkpoint(model, config.pretrained)
        text_cfg = cfg.get("text_cfg", {})
        context_length = int(text_cfg.get("context_length", 77))
        hf_name = text_cfg.get("hf_tokenizer_name")
    else:
        if config.model_name not in open_clip.list_models():
            raise ConfigError(f"model_name={config.model_name!r}: not an open_clip model name")
        try:
            model = open_clip.create_model(config.model_name, pretrained=config.pretrained, device="cpu")
        except Exception as exc:  # open_clip raises RuntimeError/FileNotFoundError/HF errors
            raise ConfigError(
                f"cannot build open_clip model {config.model_name!r} with pretrained={config.pretrained!r} "
                f"(tags are resolved from the local cache only): {exc}"
            ) from exc
        mcfg = open_clip.get_model_config(config.model_name) or {}
        text_cfg = mcfg.get("text_cfg", {})
        context_length = int(text_cfg.get("context_length", 77))
        hf_name = text_cfg.get("hf_tokenizer_name")
    model.eval()
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", 224)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    preprocess = {
        "size": size,
        "mean": [float(v) for v in pp.get("mean", open_clip.OPENAI_DATASET_MEAN)],
        "std": [float(v) for v in pp.get("std", open_clip.OPENAI_DATASET_STD)],
        "resample": "bicubic" if pp.get("interpolation", "bicubic") == "bicubic" else "bilinear",
    }
    if hf_name:
        tokenizer, pad_id = _hf_tokenizer(str(hf_name))
    else:
        tokenizer, pad_id = clip_bpe_tokenizer()
    return OpenClipParts(model, preprocess, context_length, tokenizer, pad_id)


def _load_checkpoint(model: nn.Module, path: str) -> None:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"pretrained={path!r}: with model_cfg, pretrained must be a local checkpoint file")
    state = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model.load_state_dict(state)


def _hf_tokenizer(name: str) -> tuple[Any, int]:
    # deferred import: transformers
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # HF raises OSError/ValueError variants
        raise ConfigError(f"tokenizer {name!r} is not available locally: {exc}") from exc
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:
        raise ConfigError(f"tokenizer {name!r} has no fast (tokenizers) backend; cannot serve without torch")
    return backend, int(tok.pad_token_id or 0)


def _bytes_to_unicode() -> dict[int, str]:
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def clip_bpe_tokenizer() -> tuple[Any, int]:
    """The OpenAI CLIP BPE tokenizer (open_clip's ``SimpleTokenizer``) as a ``tokenizers.Tokenizer``.

    Same vocabulary, merges, lower-casing, pre-tokenization regex and ``<start_of_text>``/``<end_of_text>``
    framing; padding id 0. (open_clip additionally runs ftfy's mojibake repair, which is not reproduced.)
    """

    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    bpe_file = importlib.resources.files("open_clip") / "bpe_simple_vocab_16e6.txt.gz"
    with bpe_file.open("rb") as fh:
        lines = gzip.decompress(fh.read()).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    byte_chars = list(_bytes_to_unicode().values())
    vocab_list = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
    vocab_list += ["<start_of_text>", "<end_of_text>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}
    sot, eot = vocab["<start_of_text>"], vocab["<end_of_text>"]
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=[(a, b) for a, b in merges],
            end_of_word_suffix="</w>",
            continuing_subword_prefix="",
            fuse_unk=False,
        )
    )
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFC(),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
            normalizers.Lowercase(),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="<start_of_text> $A <end_of_text>",
        special_tokens=[("<start_of_text>", sot), ("<end_of_text>", eot)],
    )
    tok.add_special_tokens(["<start_of_text>", "<end_of_text>"])
    return tok, 0
