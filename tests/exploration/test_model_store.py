"""Versioned checkpoints and hot reload without failing requests."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from coldstart.errors import NotFoundError
from exploration.config import VWPolicyConfig
from exploration.model_store import INITIAL_VERSION, LocalModelStore, PolicyHolder, load_policy
from exploration.policies import Arm, build_policy


def arms(n: int = 6) -> list[Arm]:
    return [Arm(item_id=f"i{i}", features={"dot": float(i) / n}) for i in range(n)]


def trained(rounds: int = 50, seed: int = 0):  # type: ignore[no-untyped-def]
    cfg = VWPolicyConfig(bits=16)
    p = build_policy(cfg, seed=seed)
    for _ in range(rounds):
        s = p.choose({"x": "a"}, arms(), 1).slots[0]
        p.learn({"x": "a"}, arms(), s.index, s.propensity, 1.0 if s.item_id == "i3" else 0.0)
    return cfg, p


def test_publish_latest_read_and_retention(tmp_path) -> None:
    store = LocalModelStore(tmp_path, keep=3)
    assert store.latest() is None
    cfg, p = trained()
    versions = [
        store.publish(p.to_bytes(), config=cfg, seed=0, n_learned=i, parent=None).version for i in range(5)
    ]
    assert versions == [f"v{i:06d}" for i in range(1, 6)]
    assert store.versions() == versions[-3:]
    latest = store.latest()
    assert latest is not None and latest.version == "v000005" and latest.n_learned == 4
    loaded = load_policy(store, "v000005")
    np.testing.assert_array_equal(loaded.pmf({"x": "a"}, arms())[0], p.pmf({"x": "a"}, arms())[0])
    with pytest.raises(NotFoundError):
        store.read("v000001")
    assert not [q for q in tmp_path.iterdir() if q.name.startswith(".")]  # no temp leftovers


def test_hot_reload_swaps_atomically_under_load(tmp_path) -> None:
    store = LocalModelStore(tmp_path)
    cfg, p = trained()
    holder = PolicyHolder(build_policy(cfg), store)
    assert holder.current.version == INITIAL_VERSION
    errors: list[BaseException] = []
    seen: set[str] = set()
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                cur = holder.current
                choice = cur.policy.choose({"x": "a"}, arms(), 3)
                assert len(choice.slots) == 3
                seen.add(cur.version)
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=serve) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(5):
        p.learn({"x": "a"}, arms(), 3, 0.5, 1.0)
        store.publish(p.to_bytes(), config=cfg, seed=0, n_learned=i, parent=None)
        assert holder.maybe_reload()
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert holder.current.version == "v000005" and holder.reloads == 5
    np.testing.assert_array_equal(
        holder.current.policy.pmf({"x": "a"}, arms())[0], p.pmf({"x": "a"}, arms())[0]
    )
    assert len(seen) >= 2


def test_broken_checkpoint_keeps_the_current_policy(tmp_path) -> None:
    store = LocalModelStore(tmp_path)
    cfg, p = trained()
    store.publish(p.to_bytes(), config=cfg, seed=0, n_learned=1, parent=None)
    holder = PolicyHolder(build_policy(cfg), store)
    assert holder.maybe_reload()
    store.publish(b"garbage", config=cfg, seed=0, n_learned=2, parent="v000001")
    assert not holder.maybe_reload()
    assert holder.current.version == "v000001" and holder.reload_failures == 1
    assert len(holder.current.policy.choose({}, arms(), 2).slots) == 2
