"""The decision draft's wire JSON: the same decision as the validated model, whatever the names."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from coldstart.decisions import Decision, DecisionDraft, Slot


def _draft(rng: np.random.Generator, n: int, names: list[str], ids: list[str] | None = None) -> DecisionDraft:
    feats = (rng.standard_normal((n, len(names))) * 10.0 ** rng.integers(-8, 9, (n, len(names)))).round(6)
    return DecisionDraft(
        decision_id=uuid.uuid4().hex,
        ts=datetime.now(UTC),
        user_id="user-1",
        context={"device": "mobile", "hour": 3.0, "has_user": 1.0},
        policy="vw-squarecb",
        model_version="v000003",
        item_ids=ids if ids is not None else [f"item-{i}" for i in rng.integers(0, 10_000, n)],
        probabilities=rng.dirichlet(np.ones(n)) if n else np.zeros(0),
        scores=rng.standard_normal(n) * 10.0 ** rng.integers(-12, 12, n),
        feature_names=tuple(names),
        features=feats,
        slots=tuple(
            Slot(item_id=f"item-{i}", position=i, propensity=0.5, score=0.1) for i in range(min(n, 3))
        ),
    )


def test_to_json_is_the_decision_the_model_validates_for_any_names_ids_and_sizes() -> None:
    rng = np.random.default_rng(0)
    odd_names = ['we"ird%s', "ü%d", "a\\b", "%", "tab\tname", ""]
    for trial in range(200):
        n, f = int(rng.integers(0, 120)), int(rng.integers(0, 15))
        names = [f"f{j}" for j in range(f)]
        if trial % 4 == 0:
            names = (odd_names + names)[:f]
        ids = [f'id"{i}%s\\ü\n{{}}' for i in range(n)] if trial % 3 == 0 else None
        draft = _draft(rng, n, names, ids)
        wire = draft.to_json()
        # the same JSON document as dumping the per-candidate dicts, and the same validated decision
        assert json.loads(wire) == json.loads(orjson.dumps(draft._payload(), option=orjson.OPT_UTC_Z))
        assert Decision.model_validate_json(wire) == draft.to_decision()


def test_to_json_of_non_finite_numbers_goes_through_the_model() -> None:
    rng = np.random.default_rng(1)
    draft = _draft(rng, 5, ["a", "b"])
    bad_scores = DecisionDraft(**{**vars(draft), "scores": np.array([1.0, np.nan, 0.0, 0.0, 0.0])})
    bad_feats = DecisionDraft(
        **{**vars(draft), "features": np.where(np.eye(5, 2) > 0, np.inf, draft.features)}
    )
    for d in (bad_scores, bad_feats):  # what the model writes for them (NaN and infinities become null)
        assert d.to_json() == d.to_decision().model_dump_json().encode("utf-8")
    with pytest.raises(ValueError, match="probability"):
        DecisionDraft(**{**vars(draft), "probabilities": draft.probabilities + 2.0}).to_json()
