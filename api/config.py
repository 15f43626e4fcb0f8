"""Settings section for api/ (owned by api/).

Environment variables use the ``COLDSTART_API__`` prefix, e.g.
``COLDSTART_API__API_KEYS='["key-a","key-b"]'``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiSettings(BaseModel):
    """HTTP server settings.

    Parameters
    ----------
    api_keys
        Accepted values of the ``X-API-Key`` header; every endpoint except ``/healthz`` and
        ``/readyz`` requires one (``/metrics`` too unless ``metrics_public``).
    connect_kafka
        Connect a producer (``POST /v1/items``, ``POST /v1/interactions`` and the decisions topic);
        when no broker answers the API still serves slots and those endpoints answer 503.
    offline_decisions
        Without Kafka (``connect_kafka=false``): write every decision to the offline store from this process
        (micro-batched background writer). With Kafka the archive consumer (``coldstart stream
        archive``, run by ``coldstart stream learn``) writes them from the decisions topic instead.
    search_index
        Keep a content-space index of cold items for ``GET /v1/search`` (needs an encoder artifact
        for queries).
    workers
        uvicorn worker processes of ``coldstart api serve``.
    balance
        With ``workers > 1``: ``round_robin`` (the parent process accepts and hands each connection to
        the next ready worker) or ``shared_socket`` (uvicorn's own mode, where one worker can accept
        most of a burst of connections); see :mod:`api.serve`.
    blas_threads
        Threads of numpy's BLAS in each API process (``threadpoolctl``), set before the state is
        built and restored at shutdown: with 1, the exact pool scores with BLAS's gemv (~3x faster
        than numpy's own kernel) and no BLAS thread spins for a core another worker is using.
        ``None`` leaves the library's default.
    gc_freeze
        After start-up, ``gc.freeze()`` the objects alive then (see ``api.main``): the collector
        then never rescans them on the request path.
    decision_log_process
        Publish decisions to Kafka from a child process owning its own producer (the Kafka client's
        Python work then never holds the serving process's GIL); ``False``: from a thread.
    direct_routes
        Serve well-formed, authorised ``POST /v1/exploration/slots`` requests without FastAPI's
        per-request machinery (:mod:`api.direct`; same handler, same responses, errors still through
        FastAPI); ``False``: every request goes through FastAPI.
    decision_log_linger_ms
        Longest a decision waits before its burst goes to the decision-log process (see
        :class:`~exploration.sinks.ProcessKafkaDecisionSink`): a burst is one hand-over and one produce
        request, whose cost is mostly per request (Kafka client and broker CPU per decision, measured
        with ~30 KB decisions: 0.42 + 0.16 ms in bursts of 8, 0.17 + 0.07 ms in bursts of 32), so the
        default lets a replica serving 100-200 decisions/s gather 25-50 per burst. Decisions reach the
        topic that much later; rewards are joined within a window of minutes.
    decision_log_max_batch
        Most decisions per burst (a full burst goes at once).
    decision_log_idle_class
        Run the decision-log process in the OS's ``SCHED_IDLE`` class (Linux) instead of at nice 10:
        it then gets only the CPU the request handlers leave (see
        :class:`~exploration.sinks.ProcessKafkaDecisionSink`).
    store_timeout_ms
        Longest one online-store call of this process may take (production store: Redis connect
        and read timeouts, no retries). A slot request whose user read fails is answered as for an
        unknown user with ``degraded`` set, and the store is not asked again for a second.
    publish_timeout_ms
        Longest ``POST /v1/items`` and ``POST /v1/interactions`` wait for the broker before answering
        503 (while the broker probe says it is away they answer 503 at once).
    max_body_bytes
        Largest request body; a larger one is answered 413 before it is parsed (:mod:`api.limits`).
    gil_switch_interval_s
        ``sys.setswitchinterval`` of the serving process: the longest a request waits for the GIL
        while a background thread (decision sinks, Kafka client) runs Python.
    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: list[str] = ["dev-key"]
    metrics_public: bool = False
    connect_kafka: bool = True
    offline_decisions: bool = True
    search_index: bool = True
    follow_stored: bool = True
    workers: int = Field(default=1, ge=1, le=64)
    balance: Literal["round_robin", "shared_socket"] = "round_robin"
    blas_threads: int | None = Field(default=1, ge=1, le=256)
    gc_freeze: bool = True
    decision_log_process: bool = True
    direct_routes: bool = True
    decision_log_linger_ms: int = Field(default=250, ge=0, le=10_000)
    decision_log_max_batch: int = Field(default=64, ge=1, le=4096)
    decision_log_idle_class: bool = True
    gil_switch_interval_s: float = Field(default=0.0005, gt=0.0, le=0.1)
    max_image_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    publish_timeout_ms: int = Field(default=1000, ge=100, le=60_000)
    store_timeout_ms: int = Field(default=50, ge=1, le=10_000)
