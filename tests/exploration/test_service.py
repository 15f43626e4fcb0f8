"""The slot service against a real embedded feature store and the project's pool."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest

from coldstart.errors import InvalidInputError
from exploration.config import PacingConfig, VWPolicyConfig
from exploration.model_store import PolicyHolder
from exploration.pacing import ExposurePacer
from exploration.policies import build_policy, learn_decision
from exploration.pool import CandidatePool, build_pool
from exploration.pool.exact import ExactPool
from exploration.service import SlotRequest, SlotService
from exploration.sinks import MemoryDecisionSink, OfflineDecisionSink
from feature_repo import open_store
from tests.exploration.slot_env import make_items, make_users, settings_for


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    s = open_store(settings_for(tmp_path))
    s.write_items(make_items(60))
    s.users().write_users(make_users(3))
    yield s
    s.close()


def service(store, pacing: PacingConfig | None = None, pool=None, **kw):  # type: ignore[no-untyped-def]
    sink = MemoryDecisionSink()
    svc = SlotService(
        pool=pool if pool is not None else build_pool(),
        users=store.users(),
        holder=PolicyHolder(build_policy(VWPolicyConfig(bits=16), seed=3)),
        pacer=ExposurePacer(pacing or PacingConfig()),
        sinks=[sink],
        **kw,
    )
    svc.sync_from_store(store.iter_items())
    return svc, sink


def test_known_user_gets_a_logged_decision_from_the_nearest_items(store) -> None:  # type: ignore[no-untyped-def]
    svc, sink = service(store, candidates_m=20, starving_candidates=0)
    assert len(svc) == 60
    res = svc.select(SlotRequest(user_id="user-0", k=5, context={"device": "mobile", "hour": 20.0}))
    d = res.decision
    assert res.known_user and sink.decisions == [d]
    assert len(d.slots) == 5 and len({s.item_id for s in d.slots}) == 5
    assert [s.position for s in d.slots] == list(range(5))
    assert all(0 < s.propensity <= 1 for s in d.slots)
    assert len(d.candidates) == 20
    assert sum(c.probability for c in d.candidates) == pytest.approx(1.0)
    # the candidates are the user's 20 nearest items by inner product
    user = store.users().get_users(["user-0"])["user-0"]
    items = list(store.iter_items())
    dots = {it.item_id: float(np.dot(it.item_vector, user.vector)) for it in items}
    nearest = sorted(dots, key=lambda i: -dots[i])[:20]
    assert {c.item_id for c in d.candidates} == set(nearest)
    for c in d.candidates:
        assert c.features["dot"] == pytest.approx(dots[c.item_id], abs=1e-4)
        assert sum(c.features[f"p{b}"] for b in range(8)) == pytest.approx(c.features["dot"], abs=1e-3)
    assert d.context["has_user"] == 1.0 and d.context["device"] == "mobile"
    # pacing counted the impressions
    assert all(svc.pacer.get(s.item_id).impressions == 1 for s in d.slots)  # type: ignore[union-attr]


class _PoolWithoutVectors(ExactPool):
    """A pool with the base class's candidates (hits looked up by id) that cannot hand its vectors
    out: the candidates carry their entries' own vectors."""

    def vectors(self, item_ids):  # type: ignore[no-untyped-def]
        return None

    def search_candidates(self, query, k, filters=None):  # type: ignore[no-untyped-def]
        return CandidatePool.search_candidates(self, query, k, filters)


def test_candidate_features_are_the_same_from_the_pool_matrix_or_the_entries(store) -> None:  # type: ignore[no-untyped-def]
    decisions, now = [], time.time()
    for pool in (build_pool(), _PoolWithoutVectors()):
        svc, sink = service(store, pool=pool, candidates_m=30, starving_candidates=5, clock=lambda: now)
        for user in ("user-0", "user-1", "user-2"):
            svc.select(SlotRequest(user_id=user, k=3, context={"hour": 1.0}))
        decisions.append(sink.decisions)
    fast, slow = decisions
    assert [[c.features for c in d.candidates] for d in fast] == [
        [c.features for c in d.candidates] for d in slow
    ]
    assert any(c.features["dot"] != 0.0 for d in fast for c in d.candidates)


def test_unknown_user_falls_back_to_context_and_starving_items(store) -> None:  # type: ignore[no-untyped-def]
    svc, _ = service(store, candidates_m=10)
    res = svc.select(SlotRequest(user_id="nobody", k=3, context={"page": "home"}))
    assert not res.known_user
    d = res.decision
    assert len(d.candidates) == 10 and len(d.slots) == 3
    assert all(c.features["dot"] == 0.0 for c in d.candidates)
    assert d.context["has_user"] == 0.0


def test_filters_exclusions_and_seller_cap(store) -> None:  # type: ignore[no-untyped-def]
    svc, _ = service(store, candidates_m=30, per_seller_cap=1)
    excluded = frozenset(f"item-{i:05d}" for i in range(0, 60, 2))
    for user in ("user-1", "nobody"):
        d = svc.select(
            SlotRequest(user_id=user, k=10, categories=("bags",), exclude_item_ids=excluded)
        ).decision
        by_id = {it.item_id: it for it in store.get_items([c.item_id for c in d.candidates]).values()}
        assert d.candidates and all(by_id[c.item_id].category == "bags" for c in d.candidates)
        assert not {c.item_id for c in d.candidates} & excluded
        sellers = [by_id[s.item_id].seller_id for s in d.slots]
        assert len(sellers) == len(set(sellers))  # at most one slot per seller
        assert len(d.slots) == len({by_id[c.item_id].seller_id for c in d.candidates})


def test_starving_items_get_reserved_candidate_places(store) -> None:  # type: ignore[no-untyped-def]
    svc, _ = service(store, candidates_m=10, starving_candidates=4)
    # every item is behind schedule; the user's nearest ones get impressions, the rest starve
    d = svc.select(SlotRequest(user_id="user-2", k=1)).decision
    starving = [c for c in d.candidates if c.features["starving"] == 1.0]
    assert len(starving) == 4
    assert all(c.features["boost"] > 0 for c in d.candidates)  # log boost > 0: behind schedule


def test_bad_requests_name_the_parameter(store) -> None:  # type: ignore[no-untyped-def]
    svc, _ = service(store)
    with pytest.raises(InvalidInputError, match="k="):
        svc.select(SlotRequest(user_id="user-0", k=0))
    with pytest.raises(InvalidInputError, match="k="):
        svc.select(SlotRequest(user_id="user-0", k=51))


def test_graduation_leaves_the_pool_and_logged_decisions_are_learnable(store) -> None:  # type: ignore[no-untyped-def]
    svc, sink = service(store, PacingConfig(graduate_impressions=2, graduate_clicks=0), candidates_m=60)
    graduated: list[str] = []
    svc.graduation_hooks.append(lambda events: graduated.extend(e.item_id for e in events))
    for _ in range(20):
        svc.select(SlotRequest(user_id="user-0", k=5))
    events = svc.graduate()
    assert events and {e.item_id for e in events} == set(graduated)
    assert all(e.reason == "evidence" and e.impressions >= 2 for e in events)
    assert all(svc.entry(i) is None for i in graduated)
    assert len(svc) == 60 - len(graduated) == len(svc.pool)
    # a store row that says graduated also leaves on sync
    left = next(iter(it for it in store.iter_items() if it.item_id not in graduated))
    store.write_items(
        [dataclasses.replace(left, status="graduated", updated_at=left.updated_at.replace(year=2030))]
    )
    svc.sync_from_store(store.iter_items())
    assert svc.entry(left.item_id) is None
    # decisions carry what learning needs
    policy = svc.holder.current.policy
    n = sum(learn_decision(policy, d, {d.slots[0].item_id: 1.0}) for d in sink.decisions)
    assert n == sum(len(d.slots) for d in sink.decisions)


def test_offline_sink_writes_decisions(store) -> None:  # type: ignore[no-untyped-def]
    sink = OfflineDecisionSink(store.offline, linger_s=0.05)
    svc, _ = service(store)
    svc.sinks.append(sink)
    made = [svc.select(SlotRequest(user_id="user-0", k=2)).decision for _ in range(5)]
    sink.flush()
    back = {d.decision_id: d for d in store.offline.read_decisions()}
    assert set(back) >= {d.decision_id for d in made}
    assert back[made[0].decision_id].slots == made[0].slots
    sink.close()


def test_user_vector_of_another_dimension_falls_back_to_context(store) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from feature_repo.records import StoredUser

    store.users().write_users(
        [StoredUser("odd", np.ones(7, np.float32), 1, "other-model", datetime.now(UTC))]
    )
    svc, _ = service(store, candidates_m=10)
    res = svc.select(SlotRequest(user_id="odd", k=2))
    assert not res.known_user and len(res.decision.slots) == 2


def test_most_starving_head_sort_equals_the_full_stable_sort() -> None:
    """The partial two-key sort behind ``most_starving`` returns exactly the head of the full one,
    ties (equal deadlines, equal deficits, infinities) included."""
    from exploration.schedule import _lexsort_head

    rng = np.random.default_rng(0)
    for _ in range(2000):
        size, n = int(rng.integers(1, 60)), int(rng.integers(1, 70))
        primary = rng.choice([1.0, 2.0, 3.0, np.inf], size=size)
        secondary = rng.choice([-np.inf, -1.0, 0.5, 1.0, 2.0, np.inf], size=size)
        np.testing.assert_array_equal(
            _lexsort_head(primary, secondary, n), np.lexsort((secondary, primary))[:n]
        )


def test_the_draft_wire_json_parses_to_the_validated_decision_and_survives_pickling(store) -> None:  # type: ignore[no-untyped-def]
    import pickle

    from coldstart.decisions import Decision, decision_json

    svc, sink = service(store)
    svc.sync_from_store(store.iter_items())
    for n, user in enumerate(["user-0", "user-1", "nobody"]):
        result = svc.select(SlotRequest(user_id=user, k=4, context={"device": "mobile", "n": float(n)}))
        draft = result.draft
        assert Decision.model_validate_json(draft.to_json()) == result.decision == sink.decisions[-1]
        assert (
            decision_json(result.decision)
            and Decision.model_validate_json(decision_json(result.decision)) == result.decision
        )
        again = pickle.loads(pickle.dumps(draft))
        assert again.to_json() == draft.to_json()
        assert [c.item_id for c in result.decision.candidates] == list(draft.item_ids)
        assert result.decision.candidates[0].features == dict(
            zip(draft.feature_names, draft.features[0].tolist(), strict=True)
        )
    # a draft that breaks a rule of Decision is refused on the way to the wire, like the model would
    bad = dataclasses.replace(draft, probabilities=draft.probabilities + 2.0)
    with pytest.raises(ValueError, match="probability"):
        bad.to_json()


def test_pacing_view_matches_the_single_field_reads(store) -> None:  # type: ignore[no-untyped-def]
    svc, _ = service(store, PacingConfig(target_impressions=50, window_hours=2.0))
    svc.sync_from_store(store.iter_items())
    ids = [f"item-{i:05d}" for i in range(0, 60, 7)] + ["not-tracked"]
    svc.pacer.record_impressions(ids[:3] * 4)
    now = svc.clock()
    view = svc.pacer.view(ids, now)
    assert view.boosts.shape == view.urgency.shape == view.impressions.shape == (len(ids),)
    assert view.impressions.tolist() == svc.pacer.impressions(ids).tolist()
    assert view.impressions[:3].tolist() == [4, 4, 4]
    assert (view.boosts >= 1.0).all() and view.boosts[-1] == 1.0 and view.urgency[-1] == 0.0
    assert view.known.tolist() == [True] * (len(ids) - 1) + [False]
    assert (view.urgency[3:-1] > view.urgency[0]).all()  # fewer impressions: more urgent
    assert np.allclose(view.boosts, svc.pacer.boosts(ids, now))
    assert np.allclose(view.urgency, svc.pacer.urgency(ids, now))


def test_the_offline_sink_drops_only_an_invalid_draft(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    svc, _ = service(store)
    svc.sync_from_store(store.iter_items())
    drafts = [svc.select(SlotRequest(user_id=f"user-{n}", k=2)).draft for n in range(3)]
    bad = dataclasses.replace(drafts[1], probabilities=drafts[1].probabilities - 5.0)
    sink = OfflineDecisionSink(store.offline, max_batch=10, linger_s=0.05)
    for d in [drafts[0], bad, drafts[2]]:
        sink.publish(d)
    sink.close()
    assert (sink.written, sink.errors) == (2, 1)
    logged = set(store.offline.distinct_ids("decisions", "decision_id"))
    assert {drafts[0].decision_id, drafts[2].decision_id} <= logged
    assert bad.decision_id not in logged


def test_an_item_the_pacer_no_longer_tracks_is_not_served(store) -> None:  # type: ignore[no-untyped-def]
    svc, _ = service(store, candidates_m=20, starving_candidates=0)
    first = svc.select(SlotRequest(user_id="user-0", k=3)).decision
    gone = first.candidates[0].item_id
    svc.pacer.forget([gone])  # graduated between the pool's search and the pacing read
    again = svc.select(SlotRequest(user_id="user-0", k=3)).decision
    assert gone in svc.pool and gone not in {c.item_id for c in again.candidates}
    assert len(again.candidates) == 19 and sum(c.probability for c in again.candidates) == pytest.approx(1)
