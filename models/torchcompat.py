"""Make torchvision importable on the CPU torch wheel (training/export only; serving never imports torch).

PyPI's torchvision is a CUDA build whose C extension does not load against the CPU torch wheel; its
``_meta_registrations`` then fail with ``operator torchvision::nms does not exist``, which breaks every
library importing torchvision (open_clip, transformers' BERT). coldstart never calls torchvision's ops,
so :func:`ensure_torchvision_importable` defines the missing ``torchvision::nms``/``qnms`` schemas (no
kernels; calling them raises) and imports torchvision again. Where torchvision loads cleanly (a matching
build) nothing is changed.
"""

from __future__ import annotations

import sys
import threading
from typing import Any

import torch

_LOCK = threading.Lock()
_SHIM: list[Any] = []  # keeps the torch.library.Library alive for the process lifetime

_TORCHVISION_OP_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}


def _op_exists(namespace: str, name: str) -> bool:
    try:
        getattr(getattr(torch.ops, namespace), name)
    except (AttributeError, RuntimeError):
        return False
    return True


def ensure_torchvision_importable() -> bool:
    """Import torchvision, installing the op-schema shim when its C extension is unusable.

    Returns
    -------
    bool
        True if the shim was needed (or already installed), False if torchvision imported cleanly or is
        not installed at all.
    """
    with _LOCK:
        if _SHIM:
            return True
        try:
            import torchvision

            return False
        except ImportError:
            return False
        except RuntimeError as exc:
            if "torchvision::" not in str(exc):
                raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "FRAGMENT")  # type: ignore[no-untyped-call]
        for name, schema in _TORCHVISION_OP_SCHEMAS.items():
            if not _op_exists("torchvision", name):
                lib.define(schema)  # type: ignore[no-untyped-call]
        _SHIM.append(lib)
        import torchvision  # noqa: F401

        return True
