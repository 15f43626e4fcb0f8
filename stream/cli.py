"""``coldstart broker`` and ``coldstart stream ...`` commands (heavy imports happen inside commands)."""

from __future__ import annotations

import json
import logging
import signal
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

import models
from coldstart.errors import InvalidInputError
from coldstart.settings import get_settings
from coldstart.topics import TOPICS
from feature_repo import open_offline_log, open_store
from stream.catalog_events import catalog_events

if TYPE_CHECKING:
    from coldstart.settings import Settings
    from stream.encode_worker import Encoder

app = typer.Typer(no_args_is_help=True)


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _on_signals(handler: Any) -> None:
    """Route SIGINT/SIGTERM to ``handler`` (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, lambda *_: handler())
        signal.signal(signal.SIGTERM, lambda *_: handler())


def broker_command(
    port: Annotated[
        int | None, typer.Option(help="TCP port on 127.0.0.1 (default: kafka.embedded_port).")
    ] = None,
    partitions: Annotated[
        int | None, typer.Option(help="Partitions per topic (default: kafka.partitions).")
    ] = None,
) -> None:
    """Run the embedded Tansu broker on 127.0.0.1 with the coldstart topics until SIGINT/SIGTERM.

    With ``COLDSTART_KAFKA__BOOTSTRAP_SERVERS`` set, only creates the missing topics on that Kafka.
    """
    # deferred import: kafka-python
    from stream.admin import ensure_topics
    from stream.broker import TansuBroker

    _logging(True)
    settings = get_settings()
    kafka = settings.kafka
    n_parts = partitions or kafka.partitions
    if kafka.bootstrap_servers:
        created = ensure_topics(kafka.bootstrap_servers, n_parts)
        typer.echo(
            f"external Kafka {kafka.bootstrap_servers}: created {created or 'no'} topics; nothing started"
        )
        return
    broker = TansuBroker(port or kafka.embedded_port, partitions=n_parts)
    stop = threading.Event()
    _on_signals(stop.set)
    broker.start()
    typer.echo(f"Tansu broker on {broker.bootstrap_servers} (memory storage), topics:")
    for spec in TOPICS:
        typer.echo(f"  {spec.name:<22} key={spec.key:<10} partitions={n_parts}")
    typer.echo("Ctrl-C to stop.")
    try:
        while not stop.wait(0.5):
            if not broker.running:
                raise typer.Exit(1)
    finally:
        broker.stop()
        typer.echo("broker stopped")


def load_default_encoder(settings: Settings, artifact: Path | None = None) -> Encoder:
    """The models/ ONNX encoder of ``artifact`` (default: ``models.artifact``, else the newest one).

    With ``kafka.encode.compute_threads > 1`` the sessions are single-threaded: the worker runs that
    many batches at once instead.
    """

    path = artifact or settings.models.artifact
    threads = 1 if settings.kafka.encode.compute_threads > 1 else None
    loaded: Encoder = models.load_encoder(path, providers=settings.models.providers, threads=threads)  # type: ignore[attr-defined]
    return loaded


@app.command("encode")
def encode_command(
    artifact: Annotated[
        Path | None, typer.Option(help="Encoder artifact directory (default: newest).")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="Max events per micro-batch.")] = None,
    linger_ms: Annotated[int | None, typer.Option(help="Wait for a fuller batch, ms.")] = None,
    idle_exit: Annotated[
        float | None, typer.Option(help="Exit after this many seconds without events (scripted runs).")
    ] = None,
    announce: Annotated[
        bool, typer.Option(help="Announce written rows on items.stored (feeds the API's pool index).")
    ] = True,
    verbose: Annotated[bool, typer.Option("--verbose/--quiet")] = True,
) -> None:
    """Run one encoder worker of the consumer group: items.listed → encoder → feature store.

    Start more of them to scale out (up to the partition count). SIGTERM/SIGINT finish the in-flight
    batches, commit and exit; the final counters are printed as one JSON line.
    """
    # deferred import: kafka-python
    from stream.broker import resolve_bootstrap
    from stream.encode_worker import EncodeWorker
    from stream.pool_feed import StoredAnnouncer
    from stream.producer import EventProducer

    _logging(verbose)
    settings = get_settings()
    kafka = settings.kafka
    if batch_size is not None:
        kafka.encode.max_batch_size = batch_size
    if linger_ms is not None:
        kafka.encode.linger_ms = linger_ms
    bootstrap = resolve_bootstrap(kafka)
    encoder = load_default_encoder(settings, artifact)
    if kafka.encode.vector_cache_dir is not None:
        # deferred import: kafka-python
        from stream.vector_cache import CachedEncoder

        encoder = CachedEncoder(encoder, kafka.encode.vector_cache_dir)
    store = open_store(settings)
    producer = EventProducer(bootstrap, kafka)
    worker = EncodeWorker(
        bootstrap,
        kafka,
        encoder,
        store,
        producer=producer,
        on_stored=StoredAnnouncer(producer) if announce else None,
    )
    _on_signals(worker.stop)
    try:
        metrics = worker.run(idle_exit_s=idle_exit)
    finally:
        producer.close()
    typer.echo(json.dumps(metrics.snapshot()))


@app.command("publish-catalog")
def publish_catalog_command(
    catalog: Annotated[
        Path, typer.Option(help="Catalog directory in the generic layout (models/catalog.py).")
    ],
    limit: Annotated[int | None, typer.Option(help="Publish only the first N items.")] = None,
    image_mode: Annotated[
        str, typer.Option(help="path | base64: how the image travels in the event.")
    ] = "path",
    seller_id: Annotated[str, typer.Option(help="seller_id of every event.")] = "catalog",
) -> None:
    """Publish a catalog's items as ItemListed events on items.listed (listed_at = now)."""
    # deferred import: kafka-python
    from stream.broker import resolve_bootstrap
    from stream.producer import EventProducer

    if image_mode not in ("path", "base64"):
        raise InvalidInputError("image_mode", image_mode, "must be 'path' or 'base64'")
    settings = get_settings()
    bootstrap = resolve_bootstrap(settings.kafka)
    n = 0
    with EventProducer(bootstrap, settings.kafka) as producer:
        for event in catalog_events(catalog, limit=limit, image_mode=image_mode, seller_id=seller_id):  # type: ignore[arg-type]
            producer.publish_item(event)
            n += 1
        producer.flush()
    typer.echo(f"published {n} ItemListed events to items.listed on {bootstrap}")


@app.command("topics")
def topics_command() -> None:
    """Create the coldstart topics on the configured (or embedded) broker if they are missing."""
    # deferred import: kafka-python
    from stream.admin import ensure_topics
    from stream.broker import resolve_bootstrap

    settings = get_settings()
    bootstrap = resolve_bootstrap(settings.kafka)
    created = ensure_topics(bootstrap, settings.kafka.partitions)
    typer.echo(f"{bootstrap}: created {created or 'no'} topics")


@app.command("learn")
def learn_cli(
    idle_exit_s: Annotated[float | None, typer.Option(help="Exit after this long without records.")] = None,
) -> None:
    """Online learner of the exploration policy: joins interactions to decisions, checkpoints the model."""
    # deferred import: kafka-python
    from stream.learn_worker import learn_command

    stats = learn_command(idle_exit_s=idle_exit_s)
    typer.echo(f"learner stopped: {stats}")


@app.command("archive")
def archive_command(
    idle_exit: Annotated[
        float | None, typer.Option(help="Exit after this many seconds without records (scripted runs).")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose/--quiet")] = True,
) -> None:
    """Copy the decisions and interactions topics into the offline store (committed after each write).

    ``coldstart stream learn`` runs the same archive unless ``kafka.archive.with_learner`` is off.
    """
    # deferred import: kafka-python
    from stream.admin import ensure_topics
    from stream.archive_worker import run_archive
    from stream.broker import resolve_bootstrap

    _logging(verbose)
    settings = get_settings()
    bootstrap = resolve_bootstrap(settings.kafka)
    ensure_topics(bootstrap, settings.kafka.partitions)
    stop = threading.Event()
    _on_signals(stop.set)
    metrics = run_archive(bootstrap, settings.kafka, open_offline_log(settings), stop, idle_exit_s=idle_exit)
    typer.echo(json.dumps({topic: m.snapshot() for topic, m in metrics.items()}))
