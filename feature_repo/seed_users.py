"""Seed the store's user vectors from an encoder artifact's learned users (``users.npz``).

The item tower is trained next to user embeddings in the same space (models/item_tower.py); writing
them to the store gives users with a training history a personal vector from the first request, and
the warm-up stage (stream/warmup_stage.py) then uses the stored vector as the prior of a user it has
not seen yet.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from coldstart.errors import InvalidInputError
from feature_repo.base import UserStore
from feature_repo.records import StoredUser
from models.artifact import load_users


def seed_users_from_artifact(
    users: UserStore, artifact: Path, *, batch_size: int = 1000, overwrite: bool = False
) -> int:
    """Write the artifact's learned user vectors to ``users`` (online + offline history).

    Parameters
    ----------
    users
        The user side of the feature store.
    artifact
        An artifact directory with ``users.npz`` (``coldstart models train`` writes it).
    batch_size
        Users per store write.
    overwrite
        Also replace users that already have a stored vector (by default they keep theirs: a vector
        the warm-up stage has updated from live interactions is newer than the training data).

    Returns
    -------
    int
        How many users were written. ``model_version`` of each row is the artifact's version (its
        directory name); ``interactions`` is 0 (live interactions are counted by the warm-up stage).

    Raises
    ------
    NotFoundError
        The artifact has no learned user vectors.
    """

    if batch_size < 1:
        raise InvalidInputError("batch_size", batch_size, "must be >= 1")
    user_ids, vectors = load_users(artifact)
    now = datetime.now(UTC)
    written = 0
    for start in range(0, len(user_ids), batch_size):
        ids = user_ids[start : start + batch_size]
        keep = set(ids) if overwrite else set(ids) - set(users.get_users(ids))
        rows = [
            StoredUser(
                user_id=u,
                vector=vectors[start + k],
                interactions=0,
                model_version=artifact.name,
                updated_at=now,
            )
            for k, u in enumerate(ids)
            if u in keep
        ]
        if rows:
            users.write_users(rows)
            written += len(rows)
    return written
