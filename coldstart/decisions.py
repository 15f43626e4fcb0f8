"""Typed records of exploration decisions (the ``decisions`` topic, the offline store, the reports).

A decision is what the bandit did for one request: the candidates it saw, the pmf it sampled from and
the slots it filled. It is logged to the ``decisions`` topic and to the offline store, in a form that
obp's estimators and VW's dsjson can be built from (see ``exploration/export``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from coldstart.contracts import Event, Id


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


class Decision(Event):
    """Everything needed to replay and evaluate one exploration decision off-policy: an event on the
    ``decisions`` topic under the same rules as every other (strict fields, versioned, UTC times)."""

    decision_id: Id
    ts: AwareDatetime
    user_id: Id
    context: dict[str, float | str] = Field(default_factory=dict)
    policy: str
    model_version: str
    candidates: list[Candidate]
    slots: list[Slot]


_SCHEMA_VERSION = Decision.model_fields["schema_version"].default


@dataclass(frozen=True, eq=False)
class DecisionDraft:
    """A decision as the slot service makes it: the candidates kept as columns, not as objects.

    Building and validating the :class:`Decision` (100 candidate records) and its JSON costs ~0.5 ms of
    CPU per request; a draft is cheap to make and to pickle, so the request path hands drafts to the
    sinks and :meth:`to_decision` / :meth:`to_json` run where they are needed (the decision-log
    process, the offline writer's thread), off the request.

    Parameters
    ----------
    item_ids
        Candidate item ids, length ``n``.
    probabilities, scores
        Shape ``(n,)``: the pmf sampled from (first position) and the model's scores.
    feature_names
        Length ``f``: names of the columns of ``features``.
    features
        Shape ``(n, f)``: the candidates' features as the policy saw them.
    slots
        The filled slots, in position order.
    """

    decision_id: str
    ts: datetime
    user_id: str
    context: dict[str, float | str]
    policy: str
    model_version: str
    item_ids: Sequence[str]
    probabilities: NDArray[np.float64]
    scores: NDArray[np.float64]
    feature_names: tuple[str, ...]
    features: NDArray[np.float64]
    slots: tuple[Slot, ...]

    def _payload(self, candidates: bool = True) -> dict[str, Any]:
        """The decision as plain JSON-able values (what :class:`Decision` validates); ``candidates``
        ``False``: without the candidates (:meth:`to_json` lays them out from the columns)."""
        names = self.feature_names
        payload = {
            "schema_version": _SCHEMA_VERSION,
            "decision_id": self.decision_id,
            "ts": self.ts,
            "user_id": self.user_id,
            "context": self.context,
            "policy": self.policy,
            "model_version": self.model_version,
            "candidates": None,
            "slots": [
                {"item_id": s.item_id, "position": s.position, "propensity": s.propensity, "score": s.score}
                for s in self.slots
            ],
        }
        if candidates:
            payload["candidates"] = [
                {"item_id": i, "probability": p, "score": c, "features": dict(zip(names, r, strict=True))}
                for i, p, c, r in zip(
                    self.item_ids,
                    self.probabilities.tolist(),
                    self.scores.tolist(),
                    self.features.tolist(),
                    strict=True,
                )
            ]
        return payload

    def to_decision(self) -> Decision:
        """The validated :class:`Decision` (rules of its fields enforced: pmf within [0, 1]...)."""
        # validated in pydantic-core from plain dicts (cheaper than Python-side constructions)
        return Decision.model_validate(self._payload())

    def to_json(self) -> bytes:
        """The wire form: UTF-8 JSON that :class:`Decision` parses to :meth:`to_decision`.

        The candidates' objects are laid out from the columns: orjson writes each column's numbers
        (the shortest text that reads back as the same float, as it would write the Python floats) and
        one cached ``%`` template per feature-name tuple and candidate count puts them in place; no
        per-candidate dict is built (100 candidates x 13 features: 129 us against 200 us for dumping
        dicts, about twice that for validating the model and dumping it; the same bytes). The rules
        pydantic would check on the way are checked on the arrays; a draft that breaks one, or holds
        a non-finite number, goes through :meth:`to_decision`, which raises the validation error or
        writes what the model writes.
        """

        p, scores, feats = self.probabilities, self.scores, self.features
        n, f = len(self.item_ids), len(self.feature_names)
        if not (
            p.shape == (n,)
            and scores.shape == (n,)
            and feats.shape == (n, f)
            and bool(np.all((p >= 0.0) & (p <= 1.0)))
            and bool(np.isfinite(scores).all())
            and bool(np.isfinite(feats).all())
        ):
            return self.to_decision().model_dump_json().encode("utf-8")
        payload = self._payload(candidates=False)
        payload["candidates"] = orjson.Fragment(
            _candidates_json(self.item_ids, p, scores, self.feature_names, feats)
        )
        out: bytes = orjson.dumps(payload, option=orjson.OPT_UTC_Z)
        return out


@functools.lru_cache(maxsize=1 << 16)
def _json_str(s: str) -> bytes:
    """``s`` as a JSON string literal."""

    out: bytes = orjson.dumps(s)
    return out


def _numbers(a: NDArray[np.float64]) -> list[bytes]:
    """The JSON texts of the finite numbers of ``a`` (any shape, row-major), one per number."""

    if a.size == 0:
        return []
    text: bytes = orjson.dumps(
        np.ascontiguousarray(a, dtype=np.float64).ravel(), option=orjson.OPT_SERIALIZE_NUMPY
    )
    return text[1:-1].split(b",")


@functools.lru_cache(maxsize=256)
def _candidates_template(names: tuple[str, ...], n: int) -> bytes:
    """``[{"item_id":%s,"probability":%s,"score":%s,"features":{"<name>":%s,...}}, ...]`` for ``n``."""
    feats = b",".join(_json_str(k).replace(b"%", b"%%") + b":%s" for k in names)
    one = b'{"item_id":%s,"probability":%s,"score":%s,"features":{' + feats + b"}}"
    return b"[" + b",".join([one] * n) + b"]"


def _candidates_json(
    item_ids: Sequence[str],
    probabilities: NDArray[np.float64],
    scores: NDArray[np.float64],
    names: tuple[str, ...],
    features: NDArray[np.float64],
) -> bytes:
    """The ``candidates`` array of a decision's JSON from its columns (finite numbers only)."""
    n, f = len(item_ids), len(names)
    if n == 0:
        return b"[]"
    width = 3 + f
    flat: list[bytes] = [b""] * (n * width)
    flat[0::width] = [_json_str(i) for i in item_ids]
    flat[1::width] = _numbers(probabilities)
    flat[2::width] = _numbers(scores)
    values = _numbers(features)
    for j in range(f):
        flat[3 + j :: width] = values[j::f]
    return _candidates_template(names, n) % tuple(flat)


#: What the slot service hands to the decision sinks (the service makes drafts; replays, tests and
#: other producers may hand finished decisions).
LoggedDecision = Decision | DecisionDraft


def as_decision(decision: LoggedDecision) -> Decision:
    """The validated :class:`Decision` of a draft (a decision is returned as is)."""
    return decision.to_decision() if isinstance(decision, DecisionDraft) else decision


def decision_json(decision: LoggedDecision) -> bytes:
    """The wire form of a decision or draft (UTF-8 JSON, as on the ``decisions`` topic)."""
    if isinstance(decision, DecisionDraft):
        return decision.to_json()
    return decision.model_dump_json().encode("utf-8")
