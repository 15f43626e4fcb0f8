"""Typed records of exploration decisions (cross the exploration/, stream/, api/ and analytics boundaries).

A decision is what the bandit did for one request: the candidates it saw, the pmf it sampled from and
the slots it filled. It is logged to the ``decisions`` topic and to the offline store, in a form that
obp's estimators and VW's dsjson can be built from (see ``exploration/export``).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class Candidate(BaseModel):
    """One candidate the policy scored.

    ``probability`` is the policy's probability of putting this item in the *first* slot (the pmf
    sampled from), ``score`` the model's score (higher is better).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str
    probability: float = Field(ge=0.0, le=1.0)
    score: float
    features: dict[str, float] = Field(default_factory=dict)


class Slot(BaseModel):
    """One filled exploration slot. ``propensity`` is the probability with which this item was drawn
    at this position (sampling without replacement, conditional on the earlier positions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: str
    position: int = Field(ge=0)
    propensity: float = Field(gt=0.0, le=1.0)
    score: float


class Decision(BaseModel):
    """Everything needed to replay and evaluate one exploration decision off-policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: int = 1
    decision_id: str
    ts: datetime
    user_id: str
    context: dict[str, float | str] = Field(default_factory=dict)
    policy: str
    model_version: str
    candidates: list[Candidate]
    slots: list[Slot]
