"""The slot-selection service: pool + user vector + policy + pacing → a logged :class:`Decision`.

For one request it

1. reads the user's vector from the feature store (an unknown user falls back to context only);
2. takes the top ``M - R`` cold items of the pool by inner product with that vector, plus up to ``R``
   of the most starving items (``R = starving_candidates``; an unknown user gets ``M`` items, the most
   starving first), honouring the request's category/seller filters and exclusions
   (:mod:`exploration.candidates`);
3. builds each candidate's features (:mod:`exploration.arm_features`: user·item dot, user⊙item bucket
   sums, item age, impressions, pacing boost) and samples ``k`` slots without replacement from the
   current policy's pmf (multiplied by the pacing boosts) mixed with the pacing distribution over
   urgent candidates (:meth:`ExposurePacer.choose`), the per-seller cap applied, propensities logged
   as sampled;
4. counts the impressions for pacing and hands the decision to its sinks (decisions topic, offline
   store).

The service also keeps the pool in sync with the feature store (:meth:`SlotService.sync_from_store`)
and graduates items out of it (:meth:`SlotService.graduate`).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray

from coldstart.decisions import Decision, DecisionDraft, Slot
from coldstart.errors import ColdstartError, InvalidInputError
from exploration.arm_features import arm_features
from exploration.candidates import gather_candidates
from exploration.model_store import PolicyHolder
from exploration.pacing import ExposurePacer, GraduationEvent
from exploration.pool.base import POOL_STATUSES, CandidatePool, PoolEntry, PoolFilter, entry_from_item
from exploration.sinks import DecisionSink
from feature_repo.base import UserStore
from feature_repo.records import StoredItem

log = logging.getLogger(__name__)

MAX_K = 50
COLD_STATUSES = frozenset(POOL_STATUSES)


@dataclass(frozen=True)
class SlotRequest:
    """One request for exploration slots.

    Parameters
    ----------
    user_id
        The user (may be unknown to the store).
    k
        Slots wanted, 1..50.
    context
        Free-form request features: numbers or categorical strings.
    exclude_item_ids
        Items that must not be returned (already on the page...).
    categories, sellers
        Restrict candidates to these categories / sellers (empty = no restriction).
    """

    user_id: str
    k: int
    context: Mapping[str, float | str] = field(default_factory=dict)
    exclude_item_ids: frozenset[str] = frozenset()
    categories: tuple[str, ...] = ()
    sellers: tuple[str, ...] = ()


@dataclass(frozen=True)
class SlotResult:
    """A decision and what the service observed making it."""

    draft: DecisionDraft
    """The decision as made (columnar candidates); :attr:`decision` is its validated record."""
    explored: int
    """Slots whose item was not the policy's best-scored remaining candidate."""
    known_user: bool
    degraded: str | None = None
    """Why the answer is less than it should be (``user_store_unavailable``: served as for an
    unknown user because the user read failed or the store is marked down)."""

    @functools.cached_property
    def decision(self) -> Decision:
        """The validated :class:`Decision` (built on first access, ~0.3 ms for 100 candidates)."""
        return self.draft.to_decision()


class SlotService:
    """Chooses exploration slots among cold items.

    Parameters
    ----------
    pool
        Nearest-neighbour index over the cold items' ``item_vector`` (recommendation space).
    users
        Online user vectors (``None``: every user is unknown).
    holder
        The current policy (hot-reloaded).
    pacer
        Exposure pacing state.
    sinks
        Receivers of every decision.
    candidates_m
        Candidates scored per request (M).
    starving_candidates
        Candidate places reserved for the most starving items (R).
    per_seller_cap
        Max slots per seller in one response.
    clock
        Epoch seconds.
    users_retry_s
        After a failed user read the store is not asked again for this long: requests are served as
        for unknown users (``degraded``) without waiting for it.
    """

    def __init__(
        self,
        *,
        pool: CandidatePool,
        users: UserStore | None,
        holder: PolicyHolder,
        pacer: ExposurePacer,
        sinks: Sequence[DecisionSink] = (),
        candidates_m: int = 100,
        starving_candidates: int = 10,
        per_seller_cap: int | None = None,
        clock: Callable[[], float] = time.time,
        users_retry_s: float = 1.0,
    ) -> None:
        if candidates_m < 1:
            raise InvalidInputError("candidates_m", candidates_m, "must be >= 1")
        self.pool = pool
        self.users = users
        self.holder = holder
        self.pacer = pacer
        self.sinks = list(sinks)
        self.candidates_m = candidates_m
        self.starving_candidates = max(0, min(starving_candidates, candidates_m))
        self.per_seller_cap = per_seller_cap
        self.clock = clock
        self.users_retry_s = users_retry_s
        self._users_down_until = 0.0  # time.monotonic() before which the user store is not asked
        self._entries: dict[str, PoolEntry] = {}
        self._dim: int | None = None
        self._lock = threading.Lock()
        self.graduation_hooks: list[Callable[[list[GraduationEvent]], None]] = []
        self.decisions = 0
        self.slots_served = 0
        self.slots_explored = 0

    # ------------------------------------------------------------------ pool membership
    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, item_id: str) -> PoolEntry | None:
        """The pool entry of a cold item, or ``None``."""
        return self._entries.get(item_id)

    def add_items(
        self, entries: Sequence[PoolEntry], counts: Mapping[str, tuple[int, int]] | None = None
    ) -> None:
        """Add or replace cold items (pool + pacing); ``counts`` seeds ``(impressions, clicks)``."""
        if not entries:
            return
        self.pool.upsert(entries)
        self.track(entries, counts)

    def track(
        self, entries: Sequence[PoolEntry], counts: Mapping[str, tuple[int, int]] | None = None
    ) -> None:
        """Serve and pace items the pool already holds (a loaded snapshot); as :meth:`add_items`
        without indexing them again."""
        if not entries:
            return
        with self._lock:
            for e in entries:
                self._entries[e.item_id] = e
            self._dim = int(entries[-1].vector.shape[0])
        for e in entries:
            imps, clicks = (counts or {}).get(e.item_id, (0, 0))
            self.pacer.register(
                e.item_id,
                e.listed_at_s,
                seller_id=e.seller_id,
                category=e.category,
                impressions=imps,
                clicks=clicks,
            )

    def remove_items(self, item_ids: Sequence[str]) -> None:
        """Take items out of the cold pool."""
        if not item_ids:
            return
        self.pool.remove(item_ids)
        with self._lock:
            for item_id in item_ids:
                self._entries.pop(item_id, None)
        self.pacer.forget(item_ids)

    def sync_from_store(self, items: Iterable[StoredItem]) -> tuple[int, int]:
        """Make the pool match the store's cold items: returns ``(added_or_updated, removed)``.

        Items with a cold-pool status (``exploration.pool.POOL_STATUSES``) are (re)indexed by their
        current ``item_vector``; graduated items leave the pool.
        """
        add: list[PoolEntry] = []
        counts: dict[str, tuple[int, int]] = {}
        gone: list[str] = []
        for item in items:
            if item.status not in COLD_STATUSES:
                if item.item_id in self._entries:
                    gone.append(item.item_id)
                continue
            entry = entry_from_item(item)
            old = self._entries.get(item.item_id)
            counts[item.item_id] = (item.impressions, item.clicks)
            if old is None or not np.array_equal(old.vector, entry.vector):
                add.append(entry)
            else:
                self.pacer.register(
                    item.item_id, entry.listed_at_s, impressions=item.impressions, clicks=item.clicks
                )
        self.add_items(add, counts)
        self.remove_items(gone)
        return len(add), len(gone)

    def graduate(self, now_s: float | None = None) -> list[GraduationEvent]:
        """Remove the items that graduate now from the pool; hooks receive the events."""
        events = self.pacer.graduations(now_s)
        if events:
            self.remove_items([e.item_id for e in events])
            for hook in self.graduation_hooks:
                try:
                    hook(events)
                except Exception as exc:  # a hook must not break serving
                    log.error("graduation hook failed: %s", exc)
        return events

    # ------------------------------------------------------------------ serving
    def select(self, request: SlotRequest) -> SlotResult:
        """Choose up to ``k`` exploration slots and log the decision."""
        if not 1 <= request.k <= MAX_K:
            raise InvalidInputError("k", request.k, f"must be between 1 and {MAX_K}")
        if not request.user_id:
            raise InvalidInputError("user_id", request.user_id, "must be a non-empty string")
        now = self.clock()
        loaded = self.holder.current
        user_vec, degraded = self._user_vector(request.user_id)
        if user_vec is not None and self._dim is not None and user_vec.shape[0] != self._dim:
            # e.g. user vectors of another model version: serve context-only rather than fail
            log.warning(
                "user %s: vector dim %d != pool dim %d", request.user_id, user_vec.shape[0], self._dim
            )
            user_vec = None

        filt = PoolFilter(
            categories=tuple(request.categories),
            sellers=tuple(request.sellers),
            exclude_item_ids=frozenset(request.exclude_item_ids),
        )
        cands = gather_candidates(
            self.pool,
            self.pacer,
            self._entries,
            filt,
            user_vec,
            now,
            m=self.candidates_m,
            starving=self.starving_candidates,
        )
        view = self.pacer.view(cands.ids, now)
        if not view.known.all():  # left the pacer since the search (graduated): not served
            keep = np.flatnonzero(view.known)
            cands, view = cands.take(keep.tolist()), view.take(keep)
        boosts = view.boosts
        arms = arm_features(cands.ids, cands.entries, cands.sims, user_vec, view, now, cands.vectors)
        context: dict[str, float | str] = {
            **request.context,
            "has_user": 1.0 if user_vec is not None else 0.0,
        }
        policy = loaded.policy
        # pacing mixes its urgency distribution into the policy's pmf (propensities logged as sampled)
        choice = self.pacer.choose(
            policy,
            context,
            arms,
            request.k,
            boosts=boosts,
            urgency=view.urgency,
            max_per_group=self.per_seller_cap,
            now_s=now,
        )

        explored = 0
        remaining = np.ones(len(arms), dtype=bool)
        for s in choice.slots:
            if len(arms) and choice.scores[s.index] < choice.scores[remaining].max():
                explored += 1
            remaining[s.index] = False
        decision = DecisionDraft(
            decision_id=uuid.uuid4().hex,
            ts=datetime.fromtimestamp(now, UTC),
            user_id=request.user_id,
            context=context,
            policy=policy.name,
            model_version=loaded.version,
            item_ids=arms.item_ids,
            probabilities=choice.pmf,
            scores=choice.scores,
            feature_names=arms.feature_names,
            features=arms.matrix,
            slots=tuple(
                Slot(item_id=s.item_id, position=s.position, propensity=s.propensity, score=s.score)
                for s in choice.slots
            ),
        )
        self.pacer.record_impressions(s.item_id for s in choice.slots)
        for sink in self.sinks:
            try:
                sink.publish(decision)
            except Exception as exc:  # a sink outage must not fail the request; it is logged and counted
                log.error("decision sink %s failed: %s", type(sink).__name__, exc)
        self.decisions += 1
        self.slots_served += len(choice.slots)
        self.slots_explored += explored
        return SlotResult(
            draft=decision, explored=explored, known_user=user_vec is not None, degraded=degraded
        )

    @property
    def users_available(self) -> bool:
        """Whether user reads are attempted (no recent failure)."""
        return time.monotonic() >= self._users_down_until

    def _user_vector(self, user_id: str) -> tuple[NDArray[np.float32] | None, str | None]:
        """The user's vector (``None`` if unknown), and why not when the store failed."""
        if self.users is None:
            return None, None
        if not self.users_available:
            return None, "user_store_unavailable"
        try:
            user = self.users.get_users([user_id]).get(user_id)
        except ColdstartError as exc:  # an outage of the online store: serve, do not wait for it
            if self.users_available:
                log.warning(
                    "user store unavailable (%s): unknown-user slots for %.1fs", exc, self.users_retry_s
                )
            self._users_down_until = time.monotonic() + self.users_retry_s
            return None, "user_store_unavailable"
        return (None if user is None else np.asarray(user.vector, dtype=np.float32).reshape(-1)), None

    def close(self) -> None:
        """Flush and close the sinks."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.error("closing sink %s failed: %s", type(sink).__name__, exc)
