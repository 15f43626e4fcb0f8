"""Warm-up: blend behavioural evidence into a cold item's frozen content vector (see docs/warmup.md)."""

from models.warmup.base import Evidence, ItemWarmState, UserWarmState, WarmupModel
from models.warmup.shrinkage import ShrinkageConfig, ShrinkageWarmup, fit_behavior_scale

__all__ = [
    "Evidence",
    "ItemWarmState",
    "ShrinkageConfig",
    "ShrinkageWarmup",
    "UserWarmState",
    "WarmupModel",
    "fit_behavior_scale",
]
