"""The online warm-up stage on the real embedded feature store (SQLite online + parquet offline)."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from coldstart.contracts import Interaction
from exploration.pool import ExactPool, ItemPools
from feature_repo.feast_store import FeastFeatureStore
from feature_repo.records import StoredItem, StoredUser
from feature_repo.testing import random_items
from models.warmup import Evidence, ItemWarmState, ShrinkageConfig, ShrinkageWarmup
from models.warmup.posterior import PosteriorWarmup, fit_posterior_calibration
from models.warmup.served import ServedWarmup, build_posterior
from stream.config import WarmupStageConfig
from stream.warmup_batch import Delivery
from stream.warmup_checkpoint import WarmupCheckpoint
from stream.warmup_stage import WarmupStage
from tests.stream.helpers import module_store_fixtures

store_dir, store = module_store_fixtures()  # own store (see the helper)


T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
DIM = 8


def make_items(prefix: str, n: int, seed: int) -> list[StoredItem]:
    return random_items(n, seed=seed, prefix=prefix, listed_at=T0, dim=DIM, categories=3, seller_id="s")


def click(
    prefix: str, n: int, user: str, item: str, kind: str = "click", value: float | None = None
) -> Interaction:
    return Interaction(
        event_id=f"{prefix}-ev-{n}",
        user_id=user,
        item_id=item,
        kind=kind,  # type: ignore[arg-type]
        value=value,
        ts=T0 + timedelta(minutes=1, milliseconds=n),
    )


def new_stage(
    store: FeastFeatureStore, path: Path, pools: ItemPools | None = None, **shrink: object
) -> WarmupStage:
    cfg = WarmupStageConfig(
        shrinkage=ShrinkageConfig(**shrink),  # type: ignore[arg-type]
        announce=False,
    )
    return WarmupStage(store, WarmupCheckpoint(path, durable=False), cfg, pools=pools)


@pytest.fixture
def prefix() -> str:
    return uuid.uuid4().hex[:8]


def test_bound_monotone_counts_and_status_on_stored_vectors(
    store: FeastFeatureStore, prefix: str, tmp_path: Path
) -> None:
    items = make_items(prefix, 2, seed=1)
    store.write_items(items)
    rng = np.random.default_rng(2)
    x = rng.standard_normal(DIM).astype(np.float32) * 3.0  # one consistent user taste
    user, user2 = f"{prefix}-u", f"{prefix}-u2"
    store.users().write_users(
        [StoredUser(user, x, 0, "trained-1", T0), StoredUser(user2, x, 0, "trained-1", T0)]
    )
    # item 0: a loose bound (never binds); item 1: a tight one (binds after a few clicks). The users'
    # own κ is huge, so their vectors stay at x and the item's posterior mean is exact.
    loose = new_stage(
        store,
        tmp_path / "a.sqlite3",
        prior_strength=5.0,
        delta_max=10.0,
        warm_after=4,
        user_prior_strength=1e9,
    )
    tight = new_stage(
        store,
        tmp_path / "b.sqlite3",
        prior_strength=5.0,
        delta_max=0.3,
        warm_after=4,
        user_prior_strength=1e9,
    )
    c0, c1 = items[0].item_vector, items[1].item_vector
    dist: list[float] = []
    n_ev = 0
    impressions = [click(prefix, 10_000, user, items[0].item_id, "impression")]
    loose.process([Delivery(impressions[0])])
    got = store.get_items([items[0].item_id])[items[0].item_id]
    assert got.status == "warming" and got.impressions == 1 and got.clicks == 0
    np.testing.assert_allclose(got.item_vector, c0, atol=1e-6)  # impressions weigh 0 in the blend
    for step in range(6):
        n_ev += 1
        loose.process([Delivery(click(prefix, n_ev, user, items[0].item_id))])
        n_ev += 1
        tight.process([Delivery(click(prefix, n_ev, user2, items[1].item_id))])
        both = store.get_items([items[0].item_id, items[1].item_id])
        v0, v1 = both[items[0].item_id], both[items[1].item_id]
        # bound on the stored vectors
        assert np.linalg.norm(v1.item_vector - c1) <= 0.3 * np.linalg.norm(c1) + 1e-5
        assert np.linalg.norm(v0.item_vector - c0) <= 10.0 * np.linalg.norm(c0) + 1e-5
        # exact posterior mean with identical evidence: v = c + n/(n+κ)(x − c) (ρ = 1)
        n = step + 1
        np.testing.assert_allclose(v0.item_vector, c0 + n / (n + 5.0) * (x - c0), rtol=1e-5, atol=1e-5)
        dist.append(float(np.linalg.norm(v0.item_vector - x)))
        assert v0.clicks == n and v0.impressions == 1
        assert v0.status == ("warm" if n >= 4 else "warming")
        assert v0.content_item_vector is not None
        np.testing.assert_array_equal(v0.content_item_vector, c0)  # c stays frozen
        assert v0.model_version.startswith("warmup-")
    # monotone in evidence: strictly closer to the behavioural estimate after every click
    assert all(b < a for a, b in itertools.pairwise(dist))
    # the tight bound binds: ‖δ‖ saturates at δmax‖c‖
    last1 = store.get_items([items[1].item_id])[items[1].item_id].item_vector
    assert np.linalg.norm(last1 - c1) == pytest.approx(0.3 * np.linalg.norm(c1), rel=1e-4)
    # κ_user is huge: the user's vector never moved, so its row was not rewritten (only vector changes
    # are written); the checkpoint counts all 7 interactions
    u = store.users().get_users([user])[user]
    assert u.model_version == "trained-1"
    u_state = loose.user_state(user)
    assert u_state is not None and u_state.interactions == 7 and u_state.positives == 6
    # the offline history: the initial state row plus one per update (1 impression + 6 clicks)
    hist = store.offline.frame("item_state")  # type: ignore[arg-type]
    assert (hist["item_id"] == items[0].item_id).sum() == 8


def test_redelivery_and_duplicates_do_not_double_count(
    store: FeastFeatureStore, prefix: str, tmp_path: Path
) -> None:
    items = make_items(prefix, 3, seed=3)
    store.write_items(items)
    rng = np.random.default_rng(4)
    users = [f"{prefix}-u{j}" for j in range(4)]
    vecs = [rng.standard_normal(DIM).astype(np.float32) for _ in users]
    store.users().write_users([StoredUser(u, v, 0, "trained", T0) for u, v in zip(users, vecs, strict=True)])
    store.users().write_users(
        [StoredUser(u + "-clean", v, 0, "trained", T0) for u, v in zip(users, vecs, strict=True)]
    )
    events = [
        click(prefix, n, users[n % 4], items[n % 3].item_id, ("click", "impression", "rating")[n % 3], 4.5)
        for n in range(30)
    ]
    deliveries = [Delivery(e, partition=0, offset=n) for n, e in enumerate(events)]
    path = tmp_path / "cp.sqlite3"
    stage = new_stage(store, path)
    first = stage.process(deliveries[:20])
    assert first.applied == 20
    ids = [it.item_id for it in items]
    before = store.get_items(ids)
    # the consumer re-delivers the whole batch (offsets not committed) ...
    again = stage.process(deliveries[:20])
    assert again.redelivered == 20 and again.applied == 0
    # ... the producer published the same events twice (new offsets, same event ids) ...
    dup = stage.process([Delivery(e, partition=1, offset=n) for n, e in enumerate(events[5:15])])
    assert dup.duplicates == 10 and dup.applied == 0
    after = store.get_items(ids)
    for i in ids:
        np.testing.assert_array_equal(after[i].item_vector, before[i].item_vector)
        assert (after[i].clicks, after[i].impressions) == (before[i].clicks, before[i].impressions)
    # ... and a restarted stage (same checkpoint) skips everything it applied, however old
    stage.close()
    restarted = new_stage(store, path)
    assert restarted.applied_offset("interactions", 0) == 20
    res = restarted.process(deliveries)  # offsets 0..29: 20 re-deliveries, 10 new
    assert (res.redelivered, res.applied) == (20, 10)
    # the same 30 events through a clean stage on fresh copies of the items and users: same state
    clean_items = [dataclasses.replace(it, item_id=it.item_id + "-clean") for it in items]
    store.write_items(clean_items)
    clean = new_stage(store, tmp_path / "clean.sqlite3")
    clean.process(
        [
            Delivery(e.model_copy(update={"item_id": e.item_id + "-clean", "user_id": e.user_id + "-clean"}))
            for e in events
        ]
    )
    final = store.get_items(ids + [i.item_id for i in clean_items])
    for i in ids:
        np.testing.assert_allclose(
            final[i].item_vector, final[i + "-clean"].item_vector, rtol=1e-5, atol=1e-6
        )
        assert final[i].clicks == final[i + "-clean"].clicks
        assert final[i].impressions == final[i + "-clean"].impressions
    state = restarted.item_state(ids[0])
    assert state is not None and state.interactions == 10  # events 0, 3, ..., 27


def test_pool_sees_updated_vector_and_unknown_items_are_skipped(
    store: FeastFeatureStore, prefix: str, tmp_path: Path
) -> None:
    items = make_items(prefix, 5, seed=5)
    store.write_items(items)
    pools = ItemPools(ExactPool(), ExactPool())
    pools.rebuild_from_store(store)
    user = f"{prefix}-u"
    x = np.zeros(DIM, dtype=np.float32)
    x[0] = 5.0
    store.users().write_users([StoredUser(user, x, 0, "trained", T0)])
    stage = new_stage(store, tmp_path / "cp.sqlite3", pools=pools, prior_strength=1.0)
    target = items[2].item_id
    res = stage.process(
        [Delivery(click(prefix, n, user, target, "purchase")) for n in range(5)]
        + [Delivery(click(prefix, 99, user, f"{prefix}-not-stored"))]
    )
    assert res.unknown_items == 1 and res.applied == 5
    stored = store.get_items([target])[target]
    assert isinstance(pools.item, ExactPool)
    entry = pools.item.get(target)
    assert entry is not None
    np.testing.assert_array_equal(entry.vector, stored.item_vector)
    assert not np.allclose(stored.item_vector, items[2].item_vector)
    hits = pools.item.search(x, 5)
    assert hits[0].item_id == target  # the bandit's candidate search now ranks it first for this taste
    assert hits[0].score == pytest.approx(float(stored.item_vector @ x), rel=1e-5)


def test_negative_ratings_push_away_and_zero_users_carry_no_weight(
    store: FeastFeatureStore, prefix: str, tmp_path: Path
) -> None:
    items = make_items(prefix, 2, seed=7)
    store.write_items(items)
    x = np.ones(DIM, dtype=np.float32)
    store.users().write_users([StoredUser(f"{prefix}-hater", x, 0, "trained", T0)])
    stage = new_stage(store, tmp_path / "cp.sqlite3")
    c = items[0].item_vector
    stage.process(
        [Delivery(click(prefix, n, f"{prefix}-hater", items[0].item_id, "rating", 1.0)) for n in range(3)]
    )
    v = store.get_items([items[0].item_id])[items[0].item_id]
    # low ratings are negative evidence: the item moves toward −x (the mirror of the rater's taste)
    assert np.linalg.norm(v.item_vector + x) < np.linalg.norm(c + x)
    assert v.clicks == 0 and v.status == "warming"
    # a brand-new user (zero vector) clicking: counts, but the blend does not move toward zero
    stage.process([Delivery(click(prefix, 50, f"{prefix}-newbie", items[1].item_id))])
    w = store.get_items([items[1].item_id])[items[1].item_id]
    np.testing.assert_allclose(w.item_vector, items[1].item_vector, atol=1e-6)
    assert w.clicks == 1
    newbie = store.users().get_users([f"{prefix}-newbie"])[f"{prefix}-newbie"]
    assert newbie.interactions == 1
    hater = store.users().get_users([f"{prefix}-hater"])[f"{prefix}-hater"]
    assert float(hater.vector @ c) < float(x @ c)  # and the rater moved away from what it disliked


def test_one_slot_counts_one_impression_and_one_click(
    store: FeastFeatureStore, prefix: str, tmp_path: Path
) -> None:
    """Ten clicks (and two impressions) on one (decision, item) count once: status, counters and the
    vector see one click; another decision's click on the same item counts again."""
    items = make_items(prefix, 1, seed=7)
    store.write_items(items)
    user = f"{prefix}-u"
    x = np.ones(DIM, dtype=np.float32)
    store.users().write_users([StoredUser(user, x, 0, "trained-1", T0)])
    stage = new_stage(store, tmp_path / "c.sqlite3", warm_after=2)
    item = items[0].item_id

    def on_slot(n: int, kind: str, decision: str) -> Delivery:
        ev = click(prefix, n, user, item, kind=kind)
        return Delivery(ev.model_copy(update={"decision_id": decision, "position": 0}))

    batch = [on_slot(0, "impression", "d1"), on_slot(1, "impression", "d1")]
    batch += [on_slot(2 + n, "click", "d1") for n in range(10)]
    stage.process(batch[:6])
    stage.process(batch[6:])  # the repeats span batches too
    row = store.get_items([item])[item]
    assert (row.impressions, row.clicks) == (1, 1)
    assert row.status != "warm"  # warm_after=2: one slot's ten clicks do not warm an item
    stage.process([on_slot(20, "click", "d2")])
    row = store.get_items([item])[item]
    assert (row.impressions, row.clicks) == (1, 2) and row.status == "warm"


def _served_warmup(prior_strength: float, min_positives: int) -> ServedWarmup:
    rng = np.random.default_rng(5)
    users = rng.standard_normal((40, DIM)).astype(np.float32)
    items = rng.standard_normal((40, DIM)).astype(np.float32)
    pairs = np.arange(40, dtype=np.int64)
    calibration = fit_posterior_calibration(users, items, pairs, pairs, random_pairs=500)
    return ServedWarmup(calibration, prior_strength, min_positives, {})


def test_artifact_warmup_runs_with_its_gate(store: FeastFeatureStore, prefix: str, tmp_path: Path) -> None:
    """The posterior warm-up shipped with the artifact: below the gate the stored vector is the content
    vector; at the gate it is exactly the model's posterior, and rows carry a posterior version."""
    items = make_items(prefix, 1, seed=7)
    store.write_items(items)
    x = np.random.default_rng(8).standard_normal(DIM).astype(np.float32)
    users = [f"{prefix}-u{j}" for j in range(2)]
    store.users().write_users([StoredUser(u, x, 0, "trained-1", T0) for u in users])
    served = _served_warmup(prior_strength=1.0, min_positives=2)
    cfg = WarmupStageConfig(announce=False, shrinkage=ShrinkageConfig(user_prior_strength=1e9))
    stage = WarmupStage(
        store,
        WarmupCheckpoint(tmp_path / "p.sqlite3", durable=False),
        cfg,
        served=served,
        served_version="v1",
    )
    assert stage.model_version.startswith("warmup-posterior-")
    c = items[0].item_vector
    stage.process([Delivery(click(prefix, 1, users[0], items[0].item_id))])
    first = store.get_items([items[0].item_id])[items[0].item_id]
    np.testing.assert_allclose(first.item_vector, c, atol=1e-6)  # gated: one positive is not enough
    assert first.clicks == 1 and first.model_version == stage.model_version
    stage.process([Delivery(click(prefix, 2, users[1], items[0].item_id))])
    second = store.get_items([items[0].item_id])[items[0].item_id].item_vector
    # each user's evidence is its vector before the event (both start at x)
    evidence = [Evidence(f"e{n}", x, 1.0, True) for n in range(2)]
    expected = build_posterior(served).update_item(ItemWarmState.new(items[0].item_id, c), evidence)
    assert not np.allclose(second, c)
    np.testing.assert_allclose(second, expected.vector, rtol=1e-4, atol=1e-5)


def test_stage_from_settings_loads_the_artifacts_warmup(store: FeastFeatureStore, tmp_path: Path) -> None:
    from coldstart.settings import Settings
    from models.config import ModelSettings
    from models.testing import build_tiny_artifact

    served = _served_warmup(prior_strength=30.0, min_positives=5)
    artifact = build_tiny_artifact(tmp_path / "artifacts", warmup=served)
    settings = Settings(data_dir=tmp_path / "data", models=ModelSettings(artifact=artifact))
    cfg = WarmupStageConfig(announce=False, durable=False)
    stage = WarmupStage.from_settings(settings, store, config=cfg)
    assert isinstance(stage.model, PosteriorWarmup)
    assert stage.model.prior_strength == 30.0 and stage.model.min_positives == 5
    assert stage.model_version.startswith("warmup-posterior-")
    stage.close()
    # the same settings asking for shrinkage, or an artifact without a warm-up, run shrinkage
    plain = build_tiny_artifact(tmp_path / "plain")
    for settings_, cfg_ in (
        (settings, cfg.model_copy(update={"model": "shrinkage"})),
        (Settings(data_dir=tmp_path / "data2", models=ModelSettings(artifact=plain)), cfg),
    ):
        other = WarmupStage.from_settings(settings_, store, config=cfg_)
        assert isinstance(other.model, ShrinkageWarmup) and other.model_version.startswith(
            "warmup-shrinkage-"
        )
        other.close()


def test_batch_and_per_event_kernels_write_the_same_rows(store: FeastFeatureStore, tmp_path: Path) -> None:
    """The same stream through two stages, one per kernel, in batches of different sizes: the same item
    and user rows (the batch kernel is the per-event rules, vectorised), duplicates counted alike."""
    served = _served_warmup(prior_strength=2.0, min_positives=1)
    written: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
    for kernel, size in (("per_event", 7), ("batch", 40)):
        prefix = f"k{kernel[:3]}{uuid.uuid4().hex[:6]}"
        items = make_items(prefix, 6, seed=5)
        store.write_items(items)
        users = [f"{prefix}-u{j}" for j in range(5)]
        rng = np.random.default_rng(21)
        store.users().write_users(
            [
                StoredUser(u, rng.standard_normal(DIM).astype(np.float32), 0, "trained-1", T0)
                for u in users[1:]
            ]
        )  # users[0] is new: a zero prior
        pick = np.random.default_rng(22)  # the same stream for both kernels
        stream = [
            click(
                prefix,
                n,
                users[int(pick.integers(5))],
                items[int(pick.integers(6))].item_id,
                kind=str(pick.choice(["impression", "click", "purchase"])),
            )
            for n in range(120)
        ]
        stream += stream[:10]  # published twice: dropped by event id
        cfg = WarmupStageConfig(announce=False, kernel=kernel)  # type: ignore[arg-type]
        stage = WarmupStage(
            store, WarmupCheckpoint(tmp_path / f"{kernel}.sqlite3", durable=False), cfg, served=served
        )
        for start in range(0, len(stream), size):
            stage.process([Delivery(e) for e in stream[start : start + size]])
        assert (stage.stats.applied, stage.stats.duplicates) == (120, 10)
        got_items = store.get_items([i.item_id for i in items])
        got_users = store.users().get_users(users)
        written[kernel] = (
            {k.split("-", 1)[1]: v.item_vector for k, v in got_items.items()},
            {k.split("-", 1)[1]: v.vector for k, v in got_users.items()},
        )
    (a_items, a_users), (b_items, b_users) = written["per_event"], written["batch"]
    assert a_items.keys() == b_items.keys() and a_users.keys() == b_users.keys() and len(a_users) == 5
    for k in a_items:
        np.testing.assert_allclose(a_items[k], b_items[k], atol=1e-5, rtol=1e-5)
    for k in a_users:
        np.testing.assert_allclose(a_users[k], b_users[k], atol=1e-5, rtol=1e-5)
    content = [it.item_vector for it in make_items("x", 6, seed=5)]  # the same vectors, other ids
    assert any(not np.allclose(v, c) for v, c in zip(b_items.values(), content, strict=True))
