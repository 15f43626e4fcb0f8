"""Versioned policy checkpoints and their hot reload.

A :class:`ModelStore` keeps immutable checkpoints (``v000001``, ``v000002``, ...); the learner
publishes one every few seconds, API replicas poll :meth:`ModelStore.latest` and swap the new policy
in atomically (:class:`PolicyHolder`): a request holds a reference to one ``(policy, version)`` pair
for its whole life, so a reload never fails or mixes requests.

The default store is a local directory (shared by the processes of one machine, or a network mount)::

    <root>/v000007/model.bin     the policy state (Policy.to_bytes)
    <root>/v000007/meta.json     version, created_at, policy config, events learned, parent version
    <root>/LATEST                name of the newest complete version (replaced atomically)
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from coldstart.errors import ArtifactError, NotFoundError
from exploration.config import PolicyConfig
from exploration.policies import Policy, build_policy

log = logging.getLogger(__name__)

INITIAL_VERSION = "v000000"
_VERSION = re.compile(r"^v(\d{6,})$")
_CONFIG_ADAPTER: TypeAdapter[PolicyConfig] = TypeAdapter(PolicyConfig)


@dataclass(frozen=True)
class Checkpoint:
    """Metadata of one stored policy version."""

    version: str
    created_at: datetime
    config: dict[str, Any]
    seed: int
    n_learned: int
    parent: str | None
    state: dict[str, Any] = field(default_factory=dict)  # the learner's resume point (JSON)

    def policy_config(self) -> PolicyConfig:
        """The policy configuration the checkpoint was trained with."""
        try:
            return _CONFIG_ADAPTER.validate_python(self.config)
        except ValidationError as exc:
            raise ArtifactError(f"checkpoint {self.version}: unreadable policy config: {exc}") from exc


class ModelStore(ABC):
    """Immutable, versioned policy checkpoints."""

    @abstractmethod
    def publish(
        self,
        data: bytes,
        *,
        config: PolicyConfig,
        seed: int,
        n_learned: int,
        parent: str | None,
        state: dict[str, Any] | None = None,
    ) -> Checkpoint:
        """Store a new version (atomically: readers never see a partial one) and make it the latest;
        ``state`` (JSON) is stored with it (what the learner needs to resume exactly from it)."""

    @abstractmethod
    def latest(self) -> Checkpoint | None:
        """The newest complete version, or ``None`` when the store is empty."""

    @abstractmethod
    def read(self, version: str) -> tuple[Checkpoint, bytes]:
        """A version's metadata and policy bytes (raises :class:`NotFoundError`)."""

    @abstractmethod
    def versions(self) -> list[str]:
        """Stored versions, oldest first."""


class LocalModelStore(ModelStore):
    """A directory of checkpoints; keeps the newest ``keep`` versions.

    Parameters
    ----------
    root
        Directory (created if missing).
    keep
        Versions kept after a publish (older ones are deleted).
    """

    def __init__(self, root: Path, *, keep: int = 10) -> None:
        self.root = Path(root)
        self.keep = max(1, keep)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def versions(self) -> list[str]:
        names = [
            p.name for p in self.root.iterdir() if _VERSION.match(p.name) and (p / "meta.json").is_file()
        ]
        return sorted(names, key=lambda n: int(n[1:]))

    def publish(
        self,
        data: bytes,
        *,
        config: PolicyConfig,
        seed: int,
        n_learned: int,
        parent: str | None,
        state: dict[str, Any] | None = None,
    ) -> Checkpoint:
        with self._lock:
            existing = self.versions()
            number = int(existing[-1][1:]) + 1 if existing else 1
            while True:
                version = f"v{number:06d}"
                tmp = self.root / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
                tmp.mkdir()
                checkpoint = Checkpoint(
                    version=version,
                    created_at=datetime.now(UTC),
                    config=config.model_dump(mode="json"),
                    seed=seed,
                    n_learned=n_learned,
                    parent=parent,
                    state=dict(state or {}),
                )
                (tmp / "model.bin").write_bytes(data)
                meta = {**vars(checkpoint), "created_at": checkpoint.created_at.isoformat()}
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
                try:
                    os.rename(tmp, self.root / version)  # atomic; fails if another writer took the number
                    break
                except OSError:
                    shutil.rmtree(tmp, ignore_errors=True)
                    number += 1
            latest_tmp = self.root / f".LATEST-{uuid.uuid4().hex[:8]}"
            latest_tmp.write_text(version)
            os.replace(latest_tmp, self.root / "LATEST")
            for old in self.versions()[: -self.keep]:
                shutil.rmtree(self.root / old, ignore_errors=True)
            return checkpoint

    def latest(self) -> Checkpoint | None:
        pointer = self.root / "LATEST"
        try:
            version = pointer.read_text().strip()
        except FileNotFoundError:
            return None
        try:
            return self._meta(version)
        except NotFoundError:  # pruned between the two reads: fall back to the newest on disk
            versions = self.versions()
            return self._meta(versions[-1]) if versions else None

    def read(self, version: str) -> tuple[Checkpoint, bytes]:
        checkpoint = self._meta(version)
        try:
            return checkpoint, (self.root / version / "model.bin").read_bytes()
        except FileNotFoundError as exc:
            raise NotFoundError(f"model version {version!r} not found in {self.root}") from exc

    def _meta(self, version: str) -> Checkpoint:
        if not _VERSION.match(version):
            raise NotFoundError(f"model version {version!r} is not a version name")
        path = self.root / version / "meta.json"
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise NotFoundError(f"model version {version!r} not found in {self.root}") from exc
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path}: corrupt metadata") from exc
        return Checkpoint(
            version=meta["version"],
            created_at=datetime.fromisoformat(meta["created_at"]),
            config=meta["config"],
            seed=int(meta["seed"]),
            n_learned=int(meta["n_learned"]),
            parent=meta.get("parent"),
            state=dict(meta.get("state") or {}),
        )


def load_policy(store: ModelStore, version: str) -> Policy:
    """Build the policy of a stored version from its own config and restore its state."""
    checkpoint, data = store.read(version)
    policy = build_policy(checkpoint.policy_config(), seed=checkpoint.seed)
    policy.load_bytes(data)
    return policy


@dataclass(frozen=True)
class LoadedPolicy:
    """A policy together with the version it was loaded from (swapped as one reference)."""

    policy: Policy
    version: str


class PolicyHolder:
    """The current policy of a replica, hot-swappable.

    Parameters
    ----------
    initial
        Policy used until a checkpoint exists (version :data:`INITIAL_VERSION`).
    store
        Where checkpoints are looked up; ``None`` = never reload.
    """

    def __init__(self, initial: Policy, store: ModelStore | None = None) -> None:
        self.store = store
        self._current = LoadedPolicy(initial, INITIAL_VERSION)
        self._reload_lock = threading.Lock()
        self.reloads = 0
        self.reload_failures = 0

    @property
    def current(self) -> LoadedPolicy:
        """The pair to use for one request (read once, use throughout)."""
        return self._current

    def maybe_reload(self) -> bool:
        """Swap in the store's latest version if it is new; returns whether a swap happened.

        A broken checkpoint is logged and counted; the replica keeps serving the current policy.
        """
        if self.store is None:
            return False
        with self._reload_lock:
            try:
                latest = self.store.latest()
                if latest is None or latest.version == self._current.version:
                    return False
                policy = load_policy(self.store, latest.version)
            except (ArtifactError, NotFoundError, OSError) as exc:
                self.reload_failures += 1
                log.warning("policy reload failed: %s", exc)
                return False
            self._current = LoadedPolicy(policy, latest.version)  # atomic reference swap
            self.reloads += 1
            log.info("policy %s loaded", latest.version)
            return True
