"""Report charts: matplotlib (Agg backend) figures rendered to base64 PNG for a self-contained HTML."""

from __future__ import annotations

import base64
import io
import math
from typing import TYPE_CHECKING

import numpy as np

from exploration.ope import Estimate
from exploration.report.kpis import KPIs

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _figure(width: float = 6.4, height: float = 3.4) -> Figure:
    # deferred import: matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, no pyplot: no global state, no display needed
    return fig


def to_png_base64(fig: Figure) -> str:
    """The figure as a base64 PNG (no data-URI prefix)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _empty(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_axis_off()


def time_to_first(kpis: KPIs) -> Figure:
    """ECDF of hours to first impression and first click over new items (censored items keep the
    curve below 1)."""
    fig = _figure()
    ax = fig.add_subplot()
    n = len(kpis.items)
    if n == 0:
        _empty(ax, "no new items in the window")
        return fig
    for col, label, color in (
        ("hours_to_first_impression", "first impression", _COLORS[0]),
        ("hours_to_first_click", "first click", _COLORS[1]),
    ):
        h = np.sort(kpis.items[col].dropna().to_numpy(dtype=float))
        if h.size:
            ax.step(
                np.concatenate([[0.0], h]), np.arange(h.size + 1) / n, where="post", label=label, color=color
            )
    ax.set_xlabel("hours since listing")
    ax.set_ylabel("share of new items")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no impression yet", ha="center", transform=ax.transAxes, color="#666")
    ax.set_title("Time to first impression / click (new items)")
    return fig


def ctr_by_cohort(kpis: KPIs) -> Figure:
    """CTR by item-age cohort with 95% Wilson intervals."""
    fig = _figure()
    ax = fig.add_subplot()
    c = kpis.cohorts
    if int(c.impressions.sum()) == 0:
        _empty(ax, "no impressions in the window")
        return fig
    x = np.arange(len(c))
    ctr = c.ctr.fillna(0).to_numpy(dtype=float)
    low = np.nan_to_num(ctr - c.ctr_low.to_numpy(dtype=float))
    high = np.nan_to_num(c.ctr_high.to_numpy(dtype=float) - ctr)
    ax.bar(x, ctr, color=_COLORS[2], yerr=np.vstack([low, high]), capsize=4)
    for xi, n in zip(x, c.impressions, strict=True):
        ax.text(
            float(xi), 0.0, f"n={n}", ha="center", va="bottom", fontsize=8, color="white" if n else "#666"
        )
    ax.set_xticks(x, list(c.cohort))
    ax.set_xlabel("item age at the event")
    ax.set_ylabel("CTR")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("CTR by item-age cohort (95% Wilson)")
    return fig


def impressions_within_window(kpis: KPIs, target: int, hours: float) -> Figure:
    """Histogram of impressions within the exposure window, with the goal marked."""
    fig = _figure()
    ax = fig.add_subplot()
    eligible = kpis.items[kpis.items.eligible]
    if len(eligible) == 0:
        _empty(ax, f"no new item has a full {hours:g} h window before 'until'")
        return fig
    v = eligible.impressions_within_window.to_numpy(dtype=float)
    ax.hist(v, bins=min(30, max(5, int(math.sqrt(v.size)) * 2)), color=_COLORS[0], alpha=0.85)
    ax.axvline(target, color=_COLORS[3], linestyle="--", label=f"goal: {target} impressions")
    ax.set_xlabel(f"impressions within {hours:g} h of listing")
    ax.set_ylabel("new items")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title("Exposure of new items vs. the goal")
    return fig


def impressions_until_graduation(kpis: KPIs) -> Figure:
    """Histogram of impressions until graduation."""
    fig = _figure()
    ax = fig.add_subplot()
    v = kpis.items.impressions_until_graduation.dropna().to_numpy(dtype=float)
    if v.size == 0:
        _empty(ax, "no new item graduated in the window")
        return fig
    ax.hist(v, bins=min(30, max(5, v.size // 2)), color=_COLORS[4], alpha=0.85)
    ax.axvline(float(np.median(v)), color="black", linestyle=":", label=f"median {np.median(v):g}")
    ax.set_xlabel("impressions from listing to graduation")
    ax.set_ylabel("graduated items")
    ax.legend()
    ax.grid(alpha=0.3)
    ax.set_title("Impressions until graduation")
    return fig


def daily_exposure(kpis: KPIs) -> Figure:
    """Daily impressions of new items, exploration vs organic, and new listings."""
    fig = _figure(width=6.4 if len(kpis.daily) <= 14 else 9.6)
    ax = fig.add_subplot()
    d = kpis.daily
    if len(d) == 0:
        _empty(ax, "empty window")
        return fig
    x = np.arange(len(d))
    ax.bar(x, d.explored_impressions, color=_COLORS[1], label="exploration slots")
    ax.bar(x, d.organic_impressions, bottom=d.explored_impressions, color=_COLORS[0], label="organic")
    ax2 = ax.twinx()
    ax2.plot(x, d.new_items, color="black", marker="o", label="new items listed")
    ax2.set_ylabel("new items listed")
    ax.set_xticks(x, [t.strftime("%m-%d") for t in d.day], rotation=45 if len(d) > 10 else 0)
    ax.set_ylabel("impressions of new items")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Daily exposure of new items")
    return fig


def ope_forest(estimates: list[Estimate]) -> Figure:
    """Point estimates with confidence intervals, one row per (policy, estimator)."""
    rows = max(1, len(estimates))
    fig = _figure(height=max(2.4, 0.32 * rows + 1.2))
    ax = fig.add_subplot()
    if not estimates:
        _empty(ax, "no decisions to evaluate")
        return fig
    estimators = sorted({e.estimator for e in estimates}, key=["ips", "snips", "dr"].index)
    policies = list(dict.fromkeys(e.policy for e in estimates))
    y = 0.0
    ticks: list[float] = []
    labels: list[str] = []
    for p in policies:
        for e in (e for e in estimates if e.policy == p):
            color = _COLORS[estimators.index(e.estimator) % len(_COLORS)]
            ax.errorbar(
                e.value,
                -y,
                xerr=[[e.value - e.ci_low], [e.ci_high - e.value]],
                fmt="o",
                color=color,
                capsize=3,
            )
            ticks.append(-y)
            labels.append(f"{p} · {e.estimator.upper()}")
            y += 1
        y += 0.5
    logged = [e.value for e in estimates if e.policy == "logged" and e.estimator == "ips"]
    if logged:
        ax.axvline(logged[0], color="#999", linestyle="--", linewidth=1)
    ax.set_yticks(ticks, labels, fontsize=8)
    ax.set_xlabel("estimated reward per slot")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Off-policy estimates (point and CI)")
    return fig
