"""Settings of the exploration report (KPI thresholds, estimators, target policies)."""

from __future__ import annotations

import itertools
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from exploration.config import PacingConfig, RewardConfig
from exploration.ope.config import DRConfig, EstimatorConfig, IPSConfig, SNIPSConfig


class ReportConfig(BaseModel):
    """What the report computes.

    Parameters
    ----------
    target_impressions, window_hours
        The exposure goal: share of new items reaching ``target_impressions`` within ``window_hours``
        of listing (defaults: the pacing goal of ``PacingConfig``).
    click_kinds
        Interaction kinds that count as a click for CTR and time to first click.
    cohort_edges_hours
        Item-age cohort boundaries (hours since listing) for CTR by cohort.
    slots_count_as_impressions
        Count every filled exploration slot as an impression (for backends that do not send
        ``impression`` events); a slot with a matching impression event is counted once.
    estimators
        Off-policy estimators (``type``: ips / snips / dr; DR's config holds its reward model).
    rewards
        How interactions become slot rewards (window, reward per kind), as the learner does.
    model_path
        A saved policy (``exploration.policies``) to evaluate besides uniform and greedy; it is built
        from ``settings.exploration.policy`` and loaded from this file.
    max_decisions
        Evaluate at most this many decisions (the most recent) off-policy; memory and time grow with
        decisions x slots x candidates (20,000 x 5 x 100 = 10M candidate pairs, about 1 GB).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_impressions: int = Field(default_factory=lambda: PacingConfig().target_impressions, ge=1)
    window_hours: float = Field(default_factory=lambda: PacingConfig().window_hours, gt=0.0)
    click_kinds: tuple[str, ...] = ("click",)
    cohort_edges_hours: tuple[float, ...] = (1.0, 6.0, 24.0, 72.0, 168.0)
    slots_count_as_impressions: bool = False
    estimators: tuple[EstimatorConfig, ...] = (IPSConfig(), SNIPSConfig(), DRConfig())
    rewards: RewardConfig = Field(default_factory=RewardConfig)
    model_path: Path | None = None
    max_decisions: int = Field(default=20_000, ge=1)

    @field_validator("cohort_edges_hours")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(b <= a for a, b in itertools.pairwise(value)) or value[0] <= 0:
            raise ValueError(f"cohort_edges_hours={value!r} must be positive and strictly increasing")
        return value
