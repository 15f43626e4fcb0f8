"""The ``coldstart`` console script: the entry point of every process.

Each concept contributes a Typer sub-app from its own ``cli.py``; heavy imports (torch, feast, vw)
happen inside the commands, so ``coldstart --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer

from api.cli import app as api_app
from coldstart.errors import ColdstartError
from coldstart.settings import get_settings
from exploration.cli import app as exploration_app
from exploration.report.cli import export_command, report_command
from feature_repo.cli import app as store_app
from models.cli import app as models_app
from stream.cli import app as stream_app
from stream.cli import broker_command

app = typer.Typer(
    name="coldstart",
    help="Rescue new marketplace items from the cold-start trap.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(models_app, name="models", help="Encoders, item tower, ONNX export, offline evaluation.")
app.add_typer(stream_app, name="stream", help="Kafka consumers and producers (encode, learn, publish).")
app.add_typer(exploration_app, name="exploration", help="Bandit policies, pacing, off-policy evaluation.")
app.add_typer(api_app, name="api", help="The HTTP API (FastAPI).")
app.add_typer(store_app, name="store", help="Feature store: create it, print the Feast CLI environment.")
app.command("report", help="Cold-item KPIs and off-policy estimates of a window, as one HTML file.")(
    report_command
)
app.command("export", help="Export a window's decision log with rewards for obp (.npz) or VW (dsjson).")(
    export_command
)
app.command("broker", help="Run the embedded Tansu Kafka broker on 127.0.0.1 and create the topics.")(
    broker_command
)


@app.command("demo")
def demo_command(
    limit: int = typer.Option(300, help="Movies to stream as new-item events."),
    rate: float = typer.Option(10.0, help="Publishing rate, events/s (0 = as fast as possible)."),
    tiny_encoder: bool = typer.Option(
        False, help="Without a trained artifact, use a tiny random one (mechanics only) instead of training."
    ),
) -> None:
    """Main job on the embedded default: broker + encoder worker + API, streaming the MovieLens catalog."""
    # deferred import: the whole stack
    from cli.demo import run_demo

    run_demo(get_settings(), limit=limit, rate=rate, tiny_encoder=tiny_encoder)


def main() -> None:
    """Console-script entry: run the CLI, turning coldstart errors into a message and exit code 2."""
    try:
        app()
    except ColdstartError as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        sys.exit(2)


if __name__ == "__main__":
    main()
