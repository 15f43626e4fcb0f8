"""Seeding user vectors from an artifact's users.npz, on both store profiles."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from coldstart.errors import NotFoundError
from feature_repo.feast_store import FeastFeatureStore
from feature_repo.seed_users import seed_users_from_artifact
from models.artifact import save_users


def test_seed_users_round_trip_and_keeps_newer_vectors(
    store: FeastFeatureStore, uid: str, tmp_path: Path
) -> None:
    artifact = tmp_path / "offline-test-version"
    artifact.mkdir()
    rng = np.random.default_rng(0)
    dim = 8
    ids = [f"{uid}-u{k}" for k in range(5)]
    vectors = rng.normal(size=(5, dim)).astype(np.float32)
    save_users(artifact, ids, vectors)

    assert seed_users_from_artifact(store.users(), artifact, batch_size=2) == 5
    got = store.users().get_users(ids)
    assert set(got) == set(ids)
    for k, u in enumerate(ids):
        np.testing.assert_allclose(got[u].vector, vectors[k], rtol=1e-6)
        assert got[u].model_version == "offline-test-version"

    # A second seeding does not replace stored vectors unless asked to.
    save_users(artifact, ids, vectors * 2)
    assert seed_users_from_artifact(store.users(), artifact) == 0
    np.testing.assert_allclose(store.users().get_users(ids[:1])[ids[0]].vector, vectors[0], rtol=1e-6)
    assert seed_users_from_artifact(store.users(), artifact, overwrite=True) == 5
    np.testing.assert_allclose(store.users().get_users(ids[:1])[ids[0]].vector, vectors[0] * 2, rtol=1e-6)


def test_seed_users_needs_users_npz(store: FeastFeatureStore, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no learned user vectors"):
        seed_users_from_artifact(store.users(), tmp_path)
