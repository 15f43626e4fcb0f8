"""Estimators chosen by configuration (pydantic, ``type`` discriminator, Feast's pattern)::

{"type": "dr", "interval": {"method": "normal"}, "reward_model": {"type": "logistic"}}
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from exploration.ope.base import IntervalConfig, OffPolicyEstimator
from exploration.ope.dr import DR
from exploration.ope.ips import IPS
from exploration.ope.reward_model import RewardModelConfig
from exploration.ope.snips import SNIPS


class _EstimatorConfigBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    interval: IntervalConfig = Field(default_factory=IntervalConfig)


class IPSConfig(_EstimatorConfigBase):
    """Inverse propensity scoring."""

    type: Literal["ips"] = "ips"


class SNIPSConfig(_EstimatorConfigBase):
    """Self-normalised inverse propensity scoring."""

    type: Literal["snips"] = "snips"


class DRConfig(_EstimatorConfigBase):
    """Doubly robust, with its reward model."""

    type: Literal["dr"] = "dr"
    reward_model: RewardModelConfig = Field(default_factory=RewardModelConfig)


EstimatorConfig = Annotated[IPSConfig | SNIPSConfig | DRConfig, Field(discriminator="type")]


def build_estimator(config: EstimatorConfig) -> OffPolicyEstimator:
    """The estimator a config describes."""

    if isinstance(config, IPSConfig):
        return IPS(config.interval)
    if isinstance(config, SNIPSConfig):
        return SNIPS(config.interval)
    return DR(config.interval, config.reward_model)
