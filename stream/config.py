"""Settings section for stream/ (owned by stream/).

Environment variables use the ``COLDSTART_KAFKA__`` prefix, e.g.
``COLDSTART_KAFKA__BOOTSTRAP_SERVERS=broker:9092`` or ``COLDSTART_KAFKA__ENCODE__MAX_BATCH_SIZE=64``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.warmup.shrinkage import ShrinkageConfig
from stream.egress_policy import EgressPolicy

#: ``model_version`` prefix of every row the warm-up stage writes (rows with another version are external).
MODEL_VERSION_PREFIX = "warmup-"


class ImageFetchSettings(BaseModel):
    """How the encoder worker fetches item images.

    Parameters
    ----------
    timeout_s
        Per-image deadline for http/https fetches (connect + read), in seconds.
    max_bytes
        Byte cap for one image, whatever its source (URL body, file, base64 payload).
    concurrency
        Images fetched at the same time (threads).
    path_roots
        Local image paths must resolve inside one of these directories; empty (the default) refuses
        every ``image.path``: event producers must not name arbitrary files on the worker's disk.
    egress
        Where image URLs may connect (:class:`stream.egress.EgressPolicy`): by default only globally
        routable addresses, at most 3 redirects.
    """

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=3.0, gt=0.0, le=120.0)
    max_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    concurrency: int = Field(default=8, ge=1, le=256)
    path_roots: list[Path] = Field(default_factory=list)
    egress: EgressPolicy = Field(default_factory=EgressPolicy)


class EncodeWorkerSettings(BaseModel):
    """The ``items.listed`` encoder worker (a consumer group; scale out by starting more workers).

    Parameters
    ----------
    group_id
        Kafka consumer group of the encoder workers.
    max_batch_size
        Most events in one micro-batch (one encoder call, one store write, one commit).
    linger_ms
        How long a micro-batch waits for more events after its first one, in milliseconds.
    pipeline_depth
        Micro-batches in flight at once (fetch/encode/write overlap; batches waiting for the writer
        are written together). Offsets are still committed in order and only after their batch is
        written.
    compute_threads
        Micro-batches encoded at once. With more than one, ``coldstart stream encode`` loads the
        encoder with single-threaded onnxruntime sessions and runs that many batches side by side: on
        2 CPU cores 2 x 1 thread encodes more items/s than one batch on 2 intra-op threads, and other
        pipeline work that takes a core delays one batch instead of stalling both threads of every
        operator. 1: one batch at a time on onnxruntime's default threads. The worker keeps at least
        ``compute_threads + 1`` batches in flight (``pipeline_depth`` is raised to that).
    fetch_max_wait_ms
        How long the broker may hold a fetch that has no new records, in milliseconds: the upper bound
        on how long a new event can sit in the broker before this worker sees it (Tansu answers an
        idle fetch only when this wait expires), traded against idle polling.
    vector_cache_dir
        Directory of a content-addressed vector cache (``stream/vector_cache.py``): re-listings of
        unchanged content reuse their vectors instead of re-encoding. ``None`` (default): no cache.
    """

    model_config = ConfigDict(extra="forbid")

    group_id: str = "coldstart-encoder"
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    linger_ms: int = Field(default=50, ge=0, le=60_000)
    pipeline_depth: int = Field(default=4, ge=1, le=16)
    compute_threads: int = Field(default=2, ge=1, le=64)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    fetch_max_wait_ms: int = Field(default=50, ge=1, le=10_000)
    vector_cache_dir: Path | None = None


class ArchiveSettings(BaseModel):
    """The archive consumers (``decisions`` and ``interactions`` into the offline store).

    Parameters
    ----------
    group_id
        Prefix of the archive workers' consumer groups (``<group_id>-decisions``, ``-interactions``).
    max_batch_size
        Most records per offline write (one parquet part or one INSERT, one commit).
    linger_ms
        How long a batch waits for more records after its first one, ms: with the API's decision-log
        linger it bounds how long a decision takes to reach the offline store.
    with_learner
        ``coldstart stream learn`` also runs the archive (``False``: run ``coldstart stream
        archive`` on its own).
    """

    model_config = ConfigDict(extra="forbid")

    group_id: str = "coldstart-archive"
    max_batch_size: int = Field(default=512, ge=1, le=100_000)
    linger_ms: int = Field(default=1000, ge=0, le=60_000)
    with_learner: bool = True


class KafkaSettings(BaseModel):
    """Kafka connection. ``bootstrap_servers=None`` uses the embedded Tansu broker on 127.0.0.1."""

    model_config = ConfigDict(extra="forbid")

    bootstrap_servers: str | None = None
    embedded_port: int = 19092
    partitions: int = 4
    # Tansu needs short group timeouts, or a consumer group takes ~23 s to join.
    session_timeout_ms: int = 6000
    heartbeat_interval_ms: int = 1000
    client_id: str = "coldstart"
    # Producer: acks="all" so a publish returns only once the broker has the event. lz4 shrinks the
    # JSON decisions (100 candidates, ~30 KB) several-fold for the broker and the network.
    producer_linger_ms: int = Field(default=5, ge=0)
    producer_compression: Literal["none", "gzip", "lz4"] = "lz4"
    # Upper bound of one record batch (per partition, uncompressed bytes). kafka-python's 16 KiB default
    # makes every ~30 KB decision a batch of its own: a compression frame, a wake-up of the sender and
    # a batch for the broker per decision. 512 KiB keeps a burst in one batch: measured with bursts of
    # 8 decisions, 1.37 -> 0.44 ms of client CPU and 0.54 -> 0.17 ms of broker CPU per decision.
    producer_batch_bytes: int = Field(default=512 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Consumers that follow a topic without a group (the pools' items.stored feed): the longest a new
    # record waits for the next fetch. Tansu answers a fetch when its wait ends, so every fetch cycle
    # costs CPU in the follower and the broker even when idle (two idle API workers and the broker:
    # 8.6% of a core at 100 ms, 3.4% at 500 ms). Longer waits delay new items reaching the pools: in
    # the replay (benchmarks/replay.py) 500 ms doubled ours' median time to first click (164 -> 320
    # arrivals) and lowered its cold_ctr (0.068 -> 0.060-0.064).
    follow_fetch_wait_ms: int = Field(default=100, ge=1, le=10_000)
    request_timeout_ms: int = Field(default=30_000, ge=1000)
    # Longest a send may block for metadata or buffer space while the broker is away.
    producer_max_block_ms: int = Field(default=10_000, ge=100, le=300_000)
    encode: EncodeWorkerSettings = Field(default_factory=EncodeWorkerSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    images: ImageFetchSettings = Field(default_factory=ImageFetchSettings)


class WarmupStageConfig(BaseModel):
    """Settings of the online warm-up (``extra='forbid'``).

    Parameters
    ----------
    enabled
        Run the stage inside ``coldstart stream learn`` (needs a feature store).
    model
        ``artifact``: the posterior warm-up shipped with the served encoder artifact (calibrated on
        its training catalog, prior strength and gate chosen on its cold-validation items; see
        ``models/warmup/served.py``), or the shrinkage warm-up when the artifact has none;
        ``shrinkage``: always the shrinkage warm-up below.
    shrinkage
        The shrinkage hyperparameters and the evidence weight per interaction kind (used by both
        models; ``impression`` 0 by default: impressions count for pacing, not in the blend).
    rating_threshold
        A ``rating`` with ``value >= rating_threshold`` is positive (weight ``rating_positive``), a
        lower one weighs ``rating_negative``.
    positive_kinds
        Interaction kinds that count as positives (``clicks`` in the store, ``warm`` status).
    user_counterpart
        What a user's vector moves toward: the item's frozen ``content`` vector (default: results do
        not depend on how partitions interleave) or its ``served`` (blended) vector at batch start.
    max_tracked_events
        Event ids remembered per item and per user to drop events published twice.
    state_path
        The checkpoint (SQLite); ``None``: ``<data_dir>/warmup/state.sqlite3``.
    durable
        ``fsync`` every checkpoint (``synchronous=FULL``); ``False`` survives a process crash but not
        a power loss.
    announce
        Publish every written row on ``items.stored`` (the pool feed of the API replicas).
    cache_size
        Item and user states kept in memory (each); the checkpoint is the source of truth.
    write_unchanged_users
        Also write user rows whose vector did not change in the batch (only weight-0 evidence such as
        impressions): ``False`` saves most user writes; the row's ``interactions`` then catches up at
        the user's next vector change (the checkpoint always has the exact count).
    layout
        ``single``: one learner per consumer group holds the whole warm-up state in one checkpoint
        (``state_path``); ``partitioned``: any number of learners share the group, each applying the
        users of the ``interactions`` partitions it owns and the items of the ``warmup.item_evidence``
        partitions it owns, with one checkpoint per partition in the folder ``state_path`` names
        (default ``<data_dir>/warmup/<learner group>/``) and the policy learned by one member at a
        time (``stream.learn_worker``; docs/scale-out.md).
    kernel
        ``batch``: a polled batch's arithmetic in numpy (``models.warmup.batch.apply_batch``);
        ``per_event``: the same numbers through the per-event rules, one event at a time (the reference
        the batch form is tested against, and the baseline of ``benchmarks/warmup.py``).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    model: Literal["artifact", "shrinkage"] = "artifact"
    shrinkage: ShrinkageConfig = Field(default_factory=ShrinkageConfig)
    rating_threshold: float = 4.0
    positive_kinds: tuple[str, ...] = ("click", "add_to_cart", "purchase")
    user_counterpart: Literal["content", "served"] = "content"
    max_tracked_events: int = Field(default=256, ge=1, le=100_000)
    state_path: Path | None = None
    durable: bool = True
    announce: bool = True
    cache_size: int = Field(default=100_000, ge=1)
    write_unchanged_users: bool = False
    layout: Literal["single", "partitioned"] = "single"
    kernel: Literal["batch", "per_event"] = "batch"

    def model_version(self, served: dict[str, Any] | None = None, artifact: str = "") -> str:
        """``warmup-<model>-<8 hex>``: identifies the hyperparameters that produced a row; ``served``
        (the artifact's warm-up card) and ``artifact`` (its version) when the posterior runs."""
        params: dict[str, Any] = {
            "shrinkage": self.shrinkage.model_dump(),
            "rating_threshold": self.rating_threshold,
            "positive_kinds": list(self.positive_kinds),
            "user_counterpart": self.user_counterpart,
        }
        if served:
            params |= {"served": served, "artifact": artifact}
        blob = json.dumps(params, sort_keys=True)
        kind = str(served.get("type", "posterior")) if served else self.shrinkage.type
        return f"{MODEL_VERSION_PREFIX}{kind}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"
