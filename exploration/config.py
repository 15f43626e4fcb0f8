"""Settings section for exploration/ (owned by exploration/).

Policies are chosen by a pydantic config with a ``type`` discriminator (Feast's pattern)::

    COLDSTART_EXPLORATION__POLICY='{"type": "vw", "exploration": "epsilon", "epsilon": 0.1}'
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from exploration.pool.config import ExactPoolConfig, PoolConfig


class _PolicyConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    min_propensity: float = Field(
        default=1e-4,
        gt=0.0,
        le=0.5,
        description="Floor of every candidate's probability (the pmf is mixed with uniform to reach it).",
    )


class VWPolicyConfig(_PolicyConfigBase):
    """Vowpal Wabbit ``--cb_explore_adf``; VW's own exploration reduction produces the pmf."""

    type: Literal["vw"] = "vw"
    exploration: Literal["squarecb", "epsilon", "bag", "cover"] = "squarecb"
    gamma_scale: float = Field(default=10.0, gt=0.0, description="squarecb: exploitation strength.")
    gamma_exponent: float = Field(default=0.5, ge=0.0, description="squarecb: gamma grows as t**exponent.")
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0, description="epsilon-greedy / bag / cover epsilon.")
    bag: int = Field(default=5, ge=2, le=64, description="bag: number of bootstrapped policies.")
    cover: int = Field(default=3, ge=1, le=64, description="cover: number of cover policies.")
    learning_rate: float = Field(default=0.5, gt=0.0)
    bits: int = Field(default=20, ge=12, le=28, description="Hash table size, 2**bits weights.")
    interactions: tuple[str, ...] = Field(
        default=("CA", "CI", "UA"),
        description="VW -q namespace pairs: C=context, U=user-ness, A=arm numeric features, I=item id.",
    )


class EpsilonGreedyPolicyConfig(_PolicyConfigBase):
    """Shortcut for ``VWPolicyConfig(exploration="epsilon")``."""

    type: Literal["epsilon_greedy"] = "epsilon_greedy"
    epsilon: float = Field(default=0.1, ge=0.0, le=1.0)


class UniformPolicyConfig(_PolicyConfigBase):
    """Uniformly random over the candidates (baseline; learns nothing)."""

    type: Literal["uniform"] = "uniform"


class GreedyPolicyConfig(_PolicyConfigBase):
    """Content-greedy (no exploration): ranks by one candidate feature, by default the user·item dot."""

    type: Literal["greedy"] = "greedy"
    feature: str = "dot"


PolicyConfig = Annotated[
    VWPolicyConfig | EpsilonGreedyPolicyConfig | UniformPolicyConfig | GreedyPolicyConfig,
    Field(discriminator="type"),
]


class PacingConfig(BaseModel):
    """Exposure pacing and graduation out of the cold pool.

    Every item should get at least ``target_impressions`` within ``window_hours`` of listing; the
    (linear) schedule aims at ``schedule_fraction * window_hours`` for a margin. An item behind it is
    *starving*: the slot service reserves candidate places for the starving items (earliest deadline
    first), and at every slot position a share ``strength`` of the sampling distribution goes to the
    starving candidates in proportion to ``urgency ** urgency_power`` (urgency: impressions still needed
    per hour left before the deadline); the logged propensities are those of the mixed distribution.
    The share is adaptive unless ``strength`` fixes it: ``clip(safety * load, min_strength,
    max_strength)``, with ``load`` the share of the slot supply (impressions served per hour, averaged
    with a half-life of ``supply_halflife * window_hours``) that the unmet items need to make their
    deadlines served earliest deadline first. A starving item's policy probability is also multiplied
    by up to ``max_boost``. An item graduates once it has ``graduate_impressions`` impressions and
    ``graduate_clicks`` clicks, or when it is older than ``max_age_hours``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_impressions: int = Field(default=100, ge=1)
    window_hours: float = Field(default=24.0, gt=0.0)
    max_boost: float = Field(default=4.0, ge=1.0)
    strength: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="Fixed share of every slot position's sampling distribution given to starving "
        "candidates (by urgency), overriding the adaptive strength; 0 = pacing only through max_boost. "
        "None (default): adaptive, clip(safety * load, min_strength, max_strength).",
    )
    min_strength: float = Field(
        default=0.05, ge=0.0, le=1.0, description="Adaptive strength when nothing is behind (the floor)."
    )
    max_strength: float = Field(
        default=0.98, ge=0.0, le=1.0, description="Adaptive strength when the backlog exceeds the supply."
    )
    safety: float = Field(
        default=4.0,
        gt=0.0,
        description="Adaptive strength = safety * load, load = share of the slot supply that the unmet "
        "items need to make their deadlines (earliest-deadline-first demand / supply).",
    )
    urgency_power: float = Field(
        default=4.0,
        ge=0.0,
        description="The pacing distribution q is proportional to urgency ** urgency_power (higher: closer "
        "to earliest deadline first; 0: uniform over the urgent candidates).",
    )
    supply_halflife: float = Field(
        default=0.02,
        gt=0.0,
        le=1.0,
        description="Half-life of the slot supply estimate (impressions served per hour, an exponentially "
        "weighted average), as a fraction of window_hours.",
    )
    starving_order: Literal["deadline", "deficit"] = Field(
        default="deadline",
        description="Which starving items get the reserved candidate places: earliest deadline first "
        "(deadline) or largest absolute deficit first (deficit).",
    )
    full_boost_deficit: float = Field(
        default=0.25,
        gt=0.0,
        le=1.0,
        description="Relative deficit (behind / expected) at which an item gets the full max_boost.",
    )
    schedule_fraction: float = Field(
        default=0.8,
        gt=0.0,
        le=1.0,
        description="The schedule aims to reach the target at this fraction of the window (a safety margin).",
    )
    per_seller_cap: int | None = Field(default=None, ge=1, description="Max slots per seller per request.")
    graduate_impressions: int = Field(default=500, ge=1)
    graduate_clicks: int = Field(default=5, ge=0)
    max_age_hours: float = Field(default=72.0, gt=0.0)

    @model_validator(mode="after")
    def _check_strength_range(self) -> PacingConfig:
        if self.min_strength > self.max_strength:
            raise ValueError(
                f"min_strength ({self.min_strength}) must be <= max_strength ({self.max_strength})"
            )
        return self


class RewardConfig(BaseModel):
    """How interactions become rewards (joined to decisions by ``decision_id``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window_s: float = Field(default=300.0, gt=0.0, description="Reward window after the decision.")
    by_kind: dict[str, float] = Field(
        default_factory=lambda: {"impression": 0.0, "click": 1.0, "add_to_cart": 1.0, "purchase": 1.0},
        description="Reward per interaction kind; the reward of a slot is the max over its interactions.",
    )
    default_reward: float = 0.0


class ExplorationSettings(BaseModel):
    """Bandit, candidate pool and pacing settings."""

    model_config = ConfigDict(extra="forbid")

    policy: PolicyConfig = Field(default_factory=VWPolicyConfig)
    pool: PoolConfig = Field(
        default_factory=ExactPoolConfig,
        description="Cold-pool index: exact (default) or hnsw (approximate, for pools of 100,000+ items).",
    )
    pacing: PacingConfig = Field(default_factory=PacingConfig)
    rewards: RewardConfig = Field(default_factory=RewardConfig)
    candidates_m: int = Field(default=100, ge=1, le=10_000, description="Top-M pool candidates scored.")
    starving_candidates: int = Field(
        default=10, ge=0, description="Candidate places reserved for the items most behind their schedule."
    )
    model_store_dir: Path | None = Field(default=None, description="Default: <data_dir>/model_store.")
    pool_snapshot_dir: Path | None = Field(
        default=None,
        description="Where `coldstart pool snapshot` writes the cold pool and API replicas load it at start "
        "(default: <data_dir>/pool_snapshot; none there: the replica syncs from the store).",
    )
    reload_interval_s: float = Field(default=2.0, gt=0.0, description="How often replicas look for a model.")
    checkpoint_interval_s: float = Field(default=30.0, gt=0.0, description="Learner checkpoint period.")
    pool_refresh_interval_s: float = Field(
        default=5.0, gt=0.0, description="How often replicas add newly stored items to their pool."
    )
    pool_changed_sync_interval_s: float = Field(
        default=600.0,
        gt=0.0,
        description="How often replicas re-read the items whose rows were written since the last time "
        "(statuses and vectors whose announcement they missed; ids from the offline history).",
    )
    pool_sync_overlap_s: float = Field(
        default=60.0,
        ge=0.0,
        description="The changed-items sync also re-reads rows written this long before the previous one "
        "(clock skew between the writers' hosts and the replica).",
    )
    graduation_interval_s: float = Field(default=10.0, gt=0.0, description="How often graduation runs.")
    learner_group_id: str = "coldstart-learner"
    learner_max_poll_records: int = Field(
        default=4000,
        ge=1,
        le=100_000,
        description="Most records one learner poll hands the warm-up stage: a backlog is applied in batches "
        "this large (the store and checkpoint costs are per batch and per distinct item and user).",
    )
