"""A pacer for tests: fixed clock at 0, a 10-hour window, a linear schedule over the whole window."""

from __future__ import annotations

from exploration.config import PacingConfig
from exploration.pacing import ExposurePacer

H = 3600.0


def make(**kw: object) -> ExposurePacer:
    cfg = PacingConfig(
        **{
            "target_impressions": 100,
            "window_hours": 10,
            "max_boost": 5.0,
            "schedule_fraction": 1.0,
            "full_boost_deficit": 1.0,
            **kw,
        }
    )  # type: ignore[arg-type]
    return ExposurePacer(cfg, clock=lambda: 0.0)
