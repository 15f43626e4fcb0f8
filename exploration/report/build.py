"""Assemble a report: KPIs of the window plus off-policy estimates of the logged policy and of
alternatives (uniform, greedy, an optional saved model)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from tqdm.auto import tqdm

from exploration.ope import (
    BanditLog,
    Estimate,
    GreedyPolicy,
    LoggedPolicy,
    TargetPolicy,
    UniformPolicy,
    build_estimator,
    evaluate,
    join_rewards,
)
from exploration.report.config import ReportConfig
from exploration.report.kpis import KPIs, compute_kpis
from exploration.report.records import ReportData


@dataclass(frozen=True)
class ReportResult:
    """Everything the HTML shows.

    Parameters
    ----------
    estimates
        One per (policy, estimator); empty when the window has no decisions.
    ope_rounds, ope_decisions
        Size of the evaluated log (slots, decisions).
    logged_slot_reward
        On-policy mean reward per slot of the logged decisions.
    notes
        Caveats shown in the report (e.g. decisions skipped).
    """

    since: datetime
    until: datetime
    config: ReportConfig
    kpis: KPIs
    estimates: list[Estimate]
    ope_rounds: int
    ope_decisions: int
    logged_slot_reward: float
    policies: dict[str, str]
    model_versions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def default_policies() -> list[TargetPolicy]:
    """The logged policy, uniform random and greedy by logged score."""
    return [LoggedPolicy(), UniformPolicy(), GreedyPolicy()]


_DESCRIPTIONS = {
    "logged": "the policy that produced the log (its logged pmf)",
    "uniform": "uniformly random over the same candidates",
    "greedy": "always the highest logged score (no exploration)",
}


def build_report(
    data: ReportData,
    config: ReportConfig | None = None,
    extra_policies: Sequence[TargetPolicy] = (),
    progress: bool = True,
) -> ReportResult:
    """Compute the KPIs and the off-policy estimates of ``data``.

    Parameters
    ----------
    extra_policies
        More target policies (e.g. :class:`exploration.ope.ModelPolicy` of a saved model).
    progress
        Show tqdm progress bars (stderr) for the long steps.
    """
    cfg = config or ReportConfig()
    steps = tqdm(total=3, desc="report", disable=not progress)
    kpis = compute_kpis(data, cfg)
    steps.update()
    notes: list[str] = []
    decisions = sorted(data.decisions, key=lambda d: d.ts)
    if len(decisions) > cfg.max_decisions:
        notes.append(f"off-policy evaluation uses the last {cfg.max_decisions} of {len(decisions)} decisions")
        decisions = decisions[-cfg.max_decisions :]
    rewards = join_rewards(decisions, data.interactions, cfg.rewards)
    steps.update()
    log = BanditLog.from_decisions(decisions, rewards)
    policies: list[TargetPolicy] = [*default_policies(), *extra_policies]
    estimates: list[Estimate] = []
    if log.n_rounds:
        estimators = [build_estimator(c) for c in cfg.estimators]
        estimates = evaluate(log, policies, estimators, progress=progress)
    else:
        notes.append("no exploration decisions in the window: no off-policy estimates")
    steps.update()
    steps.close()
    return ReportResult(
        since=data.since,
        until=data.until,
        config=cfg,
        kpis=kpis,
        estimates=estimates,
        ope_rounds=log.n_rounds,
        ope_decisions=log.n_decisions,
        logged_slot_reward=float(log.reward.mean()) if log.n_rounds else float("nan"),
        policies={p.name: _DESCRIPTIONS.get(p.name, "saved model") for p in policies},
        model_versions=sorted({f"{d.policy}/{d.model_version}" for d in decisions}),
        notes=notes,
    )
