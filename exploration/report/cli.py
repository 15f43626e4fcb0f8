"""``coldstart report --since ... --until ... --out report.html``."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from coldstart.errors import InvalidInputError
from coldstart.settings import get_settings
from exploration.export import iter_dsjson, to_obp
from exploration.ope import ModelPolicy, join_rewards
from exploration.policies import build_policy
from exploration.report import ReportConfig, build_report, render_html
from exploration.report.source import OfflineStoreSource
from feature_repo import open_offline_log

if TYPE_CHECKING:
    from exploration.ope import TargetPolicy
    from feature_repo.offline.base import OfflineLog


def parse_when(param: str, value: str) -> datetime:
    """An ISO-8601 date or date-time; a value without a timezone is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            param, value, "not an ISO-8601 date or date-time (e.g. 2026-01-05T00:00Z)"
        ) from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def report_command(
    since: Annotated[str, typer.Option(help="Start of the window (ISO-8601, inclusive; UTC if no zone).")],
    until: Annotated[str, typer.Option(help="End of the window (ISO-8601, exclusive; UTC if no zone).")],
    out: Annotated[Path, typer.Option(help="Where to write the self-contained HTML report.")] = Path(
        "report.html"
    ),
    target_impressions: Annotated[
        int | None, typer.Option(help="Exposure goal N (default: the pacing goal).", min=1)
    ] = None,
    window_hours: Annotated[
        float | None, typer.Option(help="Exposure window T in hours (default: the pacing window).")
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="A saved policy (exploration.policy config) to evaluate too.")
    ] = None,
    offline_dir: Annotated[
        Path | None,
        typer.Option(help="Read this parquet offline store instead of the configured one."),
    ] = None,
    max_decisions: Annotated[
        int, typer.Option(help="Evaluate at most this many (most recent) decisions off-policy.", min=1)
    ] = 20_000,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Cold-item KPIs and off-policy estimates of a window, as one HTML file with charts."""

    lo, hi = parse_when("since", since), parse_when("until", until)
    if window_hours is not None and window_hours <= 0:
        raise InvalidInputError("window_hours", window_hours, "must be > 0")
    if out.exists() and out.is_dir():
        raise InvalidInputError("out", str(out), "is a directory; give a file name")
    settings = get_settings()
    overrides: dict[str, object] = {"rewards": settings.exploration.rewards, "max_decisions": max_decisions}
    if target_impressions is not None:
        overrides["target_impressions"] = target_impressions
    else:
        overrides["target_impressions"] = settings.exploration.pacing.target_impressions
    overrides["window_hours"] = (
        window_hours if window_hours is not None else settings.exploration.pacing.window_hours
    )
    config = ReportConfig.model_validate(overrides)
    extra: list[TargetPolicy] = []
    if model is not None:
        policy = build_policy(settings.exploration.policy, seed=settings.seed)
        policy.load(model)
        extra.append(ModelPolicy(policy, name=f"model:{model.name}"))
    log: OfflineLog
    if offline_dir is not None:
        # deferred import: pyarrow, duckdb
        from feature_repo.offline.parquet import ParquetOfflineLog

        if not offline_dir.is_dir():
            raise InvalidInputError("offline_dir", str(offline_dir), "is not a directory")
        log = ParquetOfflineLog(offline_dir)
    else:
        log = open_offline_log(settings)
    try:
        data = OfflineStoreSource(log).load(lo, hi, timedelta(seconds=config.rewards.window_s))
    finally:
        log.close()
    result = build_report(data, config, extra, progress=progress)
    html = render_html(result, progress=progress)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    k = result.kpis.summary
    typer.echo(
        f"wrote {out} ({len(html) / 1024:.0f} KiB): {k.n_new_items} new items, {k.n_decisions} decisions, "
        f"{len(result.estimates)} estimates",
        file=sys.stderr,
    )


def export_command(
    since: Annotated[str, typer.Option(help="Start of the window (ISO-8601, inclusive; UTC if no zone).")],
    until: Annotated[str, typer.Option(help="End of the window (ISO-8601, exclusive; UTC if no zone).")],
    out: Annotated[Path, typer.Option(help="Output file (.npz for obp, .json lines for dsjson).")],
    fmt: Annotated[
        str, typer.Option("--format", help="obp (bandit-feedback dict, .npz) or dsjson (VW).")
    ] = "dsjson",
    per: Annotated[str, typer.Option(help="dsjson: one line per 'decision' or per 'slot'.")] = "decision",
    offline_dir: Annotated[
        Path | None,
        typer.Option(help="Read this parquet offline store instead of the configured one."),
    ] = None,
) -> None:
    """Export the decision log of a window with its joined rewards, for obp or Vowpal Wabbit.

    obp: ``fb = dict(numpy.load(out, allow_pickle=False))`` gives the bandit-feedback dict (scalars
    as 0-d arrays). dsjson: ``vw --cb_explore_adf --dsjson -d out``.
    """
    # deferred import: pyarrow, duckdb
    import numpy as np

    if fmt not in ("obp", "dsjson"):
        raise InvalidInputError("format", fmt, "must be 'obp' or 'dsjson'")
    if per not in ("decision", "slot"):
        raise InvalidInputError("per", per, "must be 'decision' or 'slot'")
    lo, hi = parse_when("since", since), parse_when("until", until)
    settings = get_settings()
    rewards_cfg = settings.exploration.rewards
    log: OfflineLog
    if offline_dir is not None:
        # deferred import: pyarrow, duckdb
        from feature_repo.offline.parquet import ParquetOfflineLog

        if not offline_dir.is_dir():
            raise InvalidInputError("offline_dir", str(offline_dir), "is not a directory")
        log = ParquetOfflineLog(offline_dir)
    else:
        log = open_offline_log(settings)
    try:
        data = OfflineStoreSource(log).load(lo, hi, timedelta(seconds=rewards_cfg.window_s))
    finally:
        log.close()
    rewards = join_rewards(data.decisions, data.interactions, rewards_cfg)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "obp":
        fb = to_obp(data.decisions, rewards)
        arrays = {k: np.asarray(v, dtype=str) if k in _STR_KEYS else np.asarray(v) for k, v in fb.items()}
        with out.open("wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]  # numpy stubs: kwargs vs allow_pickle
        typer.echo(f"wrote {out}: {fb['n_rounds']} rounds, {fb['n_actions']} actions", file=sys.stderr)
    else:
        n = 0
        with out.open("w", encoding="utf-8") as fh:
            for line in iter_dsjson(data.decisions, rewards, per="slot" if per == "slot" else "decision"):
                fh.write(line + "\n")
                n += 1
        typer.echo(f"wrote {out}: {n} dsjson lines", file=sys.stderr)


_STR_KEYS = {"action_ids", "context_names", "action_context_names", "decision_id"}
