# ruff: noqa: E501  (the HTML template below keeps its prose on one line per element)
"""Render a :class:`~exploration.report.build.ReportResult` as one self-contained HTML file.

Charts are inline base64 PNGs, styles are inline; the page references no external host (no CDN,
no web fonts) and its only script counts the charts that decoded (``data-charts-loaded`` on
``<body>``), which the headless-browser test reads.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape

import pandas as pd
from tqdm.auto import tqdm

from exploration.ope.config import DRConfig
from exploration.report import charts
from exploration.report.build import ReportResult
from exploration.report.config import ReportConfig

_CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#1d2b3a;color:#fff;padding:18px 32px}
header h1{margin:0 0 4px;font-size:22px} header p{margin:0;color:#c9d3de;font-size:13px}
main{padding:16px 32px;max-width:1280px}
section{background:#fff;border-radius:8px;padding:16px 20px;margin:16px 0;box-shadow:0 1px 3px rgba(0,0,0,.08)}
h2{font-size:17px;margin:0 0 12px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:12px}
.card{border:1px solid #e3e6ea;border-radius:6px;padding:10px 12px}
.card .v{font-size:22px;font-weight:600} .card .l{font-size:12px;color:#555}
.card .s{font-size:11px;color:#888}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:12px}
figure{margin:0} figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:12px;color:#555;margin-top:4px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border-bottom:1px solid #e6e6e6;padding:4px 10px;text-align:right}
th:first-child,td:first-child,table.left td,table.left th{text-align:left} th{background:#fafbfc}
.bar{display:inline-block;height:8px;background:#e8ecf0;width:120px;border-radius:4px;vertical-align:middle}
.bar i{display:block;height:8px;background:#2ca02c;border-radius:4px}
.note{font-size:12px;color:#8a5a00;background:#fff7e6;padding:6px 10px;border-radius:4px}
dl{font-size:12px;color:#444} dt{font-weight:600;margin-top:6px} dd{margin:2px 0 0 12px}
"""

_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img.chart');
  var ok = 0;
  imgs.forEach(function (img) { if (img.complete && img.naturalWidth > 0) { ok += 1; } });
  document.body.setAttribute('data-charts-loaded', String(ok));
  document.body.setAttribute('data-charts-total', String(imgs.length));
});
"""


def _num(v: float, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, int) or (float(v).is_integer() and abs(v) >= 1):
        return f"{int(v):,}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:,.{digits - 1}f}".rstrip("0").rstrip(".")


def _pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.1f}%"


def _hours(v: float) -> str:
    if v is None or math.isnan(v):
        return "–"
    return f"{v * 60:.0f} min" if v < 1 else (f"{v:.1f} h" if v < 48 else f"{v / 24:.1f} d")


def _bar(share: float) -> str:
    w = 0.0 if share is None or math.isnan(share) else max(0.0, min(1.0, share))
    return f'<span class="bar" title="{_pct(share)}"><i style="width:{100 * w:.1f}%"></i></span>'


def _card(value: str, label: str, sub: str = "") -> str:
    s = f'<div class="s">{escape(sub)}</div>' if sub else ""
    return (
        f'<div class="card"><div class="v">{escape(value)}</div><div class="l">{escape(label)}</div>{s}</div>'
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], raw: bool = False, cls: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if raw else escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    attr = f' class="{cls}"' if cls else ""
    return f"<table{attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _figure(png: str, alt: str, caption: str) -> str:
    return (
        f'<figure><img class="chart" alt="{escape(alt)}" src="data:image/png;base64,{png}">'
        f"<figcaption>{escape(caption)}</figcaption></figure>"
    )


def render_html(result: ReportResult, progress: bool = False) -> str:
    """The report as one HTML document (UTF-8 text)."""
    k, cfg = result.kpis.summary, result.config
    figs = [
        ("time", lambda: charts.time_to_first(result.kpis)),
        (
            "goal",
            lambda: charts.impressions_within_window(result.kpis, cfg.target_impressions, cfg.window_hours),
        ),
        ("daily", lambda: charts.daily_exposure(result.kpis)),
        ("ctr", lambda: charts.ctr_by_cohort(result.kpis)),
        ("grad", lambda: charts.impressions_until_graduation(result.kpis)),
        ("ope", lambda: charts.ope_forest(result.estimates)),
    ]
    png: dict[str, str] = {}
    for name, make in tqdm(figs, desc="charts", disable=not progress):
        png[name] = charts.to_png_base64(make())

    window = f"{result.since.isoformat()} → {result.until.isoformat()}"
    cards = "".join(
        [
            _card(_num(k.n_new_items), "new items listed", f"{_num(k.corpus_size)} items in the cold corpus"),
            _card(_pct(k.share_with_impression), "new items with ≥1 impression"),
            _card(
                _hours(k.median_hours_to_first_impression),
                "median time to first impression",
                f"p90 {_hours(k.p90_hours_to_first_impression)}",
            ),
            _card(
                _hours(k.median_hours_to_first_click),
                "median time to first click",
                f"{_pct(k.share_with_click)} of new items clicked",
            ),
            _card(
                _pct(k.share_reaching_goal),
                f"reach {cfg.target_impressions} impressions within {cfg.window_hours:g} h",
                f"over {_num(k.n_eligible_for_goal)} items with a full window",
            ),
            _card(
                _num(k.median_impressions_until_graduation),
                "median impressions until graduation",
                f"{_num(k.n_graduated)} graduated",
            ),
            _card(_pct(k.discoverable_corpus), "discoverable corpus", "cold items with ≥1 impression"),
            _card(
                _pct(k.exploration_share),
                "exploration share of impressions",
                f"{_pct(k.exploration_share_new_items)} for new items",
            ),
            _card(_pct(k.ctr), "CTR (all impressions)", f"{_num(k.n_impressions)} impressions"),
            _card(
                _pct(k.exploration_slot_ctr),
                "CTR of exploration slots",
                f"{_num(k.n_slots)} slots in {_num(k.n_decisions)} decisions",
            ),
        ]
    )
    cohort_rows = [
        [
            str(r.cohort),
            _num(int(r.impressions)),
            _num(int(r.clicks)),
            _pct(r.ctr),
            f"{_pct(r.ctr_low)} – {_pct(r.ctr_high)}",
        ]
        for r in result.kpis.cohorts.itertuples()
    ]
    cat_rows = _category_rows(result.kpis.items, cfg.target_impressions)
    ope_rows = []
    logged = {e.estimator: e.value for e in result.estimates if e.policy == "logged"}
    for e in result.estimates:
        lift = (e.value / logged[e.estimator] - 1) if logged.get(e.estimator) else math.nan
        ope_rows.append(
            [
                escape(e.policy),
                e.estimator.upper(),
                f"{e.value:.4f}",
                f"[{e.ci_low:.4f}, {e.ci_high:.4f}]",
                "–" if math.isnan(lift) else f"{100 * lift:+.1f}%",
                f"{e.ess:,.0f}",
                f"{e.max_weight:.2f}",
            ]
        )
    pol_rows = [[escape(n), escape(d)] for n, d in result.policies.items()]
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in result.notes)
    ci = cfg.estimators[0].interval if cfg.estimators else None
    ci_text = (
        f"{100 * (1 - ci.alpha):g}% {ci.method} intervals"
        + (
            f" ({ci.n_bootstrap} resamples by {ci.cluster}, seed {ci.seed})"
            if ci.method == "bootstrap"
            else ""
        )
        if ci
        else ""
    )
    versions = result.model_versions
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>coldstart exploration report {escape(window)}</title>
<style>{_CSS}</style></head>
<body>
<header><h1>Cold-start exploration report</h1>
<p>Window {escape(window)} · generated {escape(result.generated_at.strftime("%Y-%m-%d %H:%M UTC"))}
 · {_num(k.n_decisions)} decisions · model versions: {escape(", ".join(versions) or "–")}</p></header>
<main>
{notes}
<section id="kpis"><h2>New-item KPIs</h2><div class="cards">{cards}</div></section>
<section id="exposure"><h2>Exposure of new items</h2><div class="charts">
{_figure(png["time"], "time to first impression and click", "Share of new items that got a first impression / click within x hours of listing; items still waiting at the end of the window keep the curve below 1.")}
{_figure(png["goal"], "impressions within the exposure window", f"Impressions in the first {cfg.window_hours:g} h after listing, new items whose window ends before 'until'.")}
{_figure(png["daily"], "daily exposure", "Impressions of new items per day, from exploration slots and organic traffic.")}
</div>
<h2>By category</h2>
{_table(["category", "new items", "≥1 impression", f"reached {cfg.target_impressions} in {cfg.window_hours:g} h", "", "median time to 1st impression"], cat_rows, raw=True)}
</section>
<section id="engagement"><h2>Engagement and graduation</h2><div class="charts">
{_figure(png["ctr"], "CTR by item-age cohort", "Clicks / impressions by the item's age at the event (95% Wilson intervals).")}
{_figure(png["grad"], "impressions until graduation", "Impressions each graduated new item received before leaving the cold pool.")}
</div>
{_table(["item age", "impressions", "clicks", "CTR", "95% interval"], cohort_rows)}
</section>
<section id="ope"><h2>Off-policy evaluation</h2>
<p style="font-size:13px">{_num(result.ope_rounds)} logged slots in {_num(result.ope_decisions)} decisions;
on-policy reward per slot {_num(result.logged_slot_reward, 4)}. {escape(ci_text)}.</p>
<div class="charts">{_figure(png["ope"], "off-policy estimates", "Estimated reward per slot of each policy; dashed line: the logged policy (IPS).")}</div>
{_table(["policy", "estimator", "value", "interval", "vs logged", "ESS", "max weight"], ope_rows, raw=True)}
{_table(["policy", "description"], pol_rows, raw=True, cls="left")}
<dl>
<dt>Estimand</dt><dd>Expected reward per exploration slot when the policy fills each slot given the items the logging policy placed at earlier positions (each slot weighted by its logged, conditional propensity). Position 0 is exactly the policy's first-slot value.</dd>
<dt>IPS / SNIPS / DR</dt><dd>Inverse propensity scoring; self-normalised IPS; doubly robust with a cross-fitted {escape(_reward_model(cfg))} reward model on the logged features. A small ESS (effective sample size) or a large max weight means the policy is far from the logged one and its estimate is noisy.</dd>
</dl>
</section>
<section id="definitions"><h2>Definitions</h2><dl>
<dt>New items</dt><dd>Items listed in the window. Only interactions inside the window are counted.</dd>
<dt>Time to first impression / click</dt><dd>Hours from listing to the item's first impression / click ({escape(", ".join(cfg.click_kinds))}).</dd>
<dt>Goal</dt><dd>{cfg.target_impressions} impressions within {cfg.window_hours:g} h of listing, over new items whose window ends before 'until'.</dd>
<dt>Discoverable corpus</dt><dd>Items in the cold corpus during the window (listed before 'until', not graduated before 'since') with at least one impression in the window.</dd>
<dt>Exploration share</dt><dd>Share of the window's impressions served in an exploration slot (they carry a decision id).</dd>
</dl></section>
</main>
<script>{_SCRIPT}</script>
</body></html>
"""


def _reward_model(cfg: ReportConfig) -> str:
    dr = [c for c in cfg.estimators if isinstance(c, DRConfig)]
    return dr[0].reward_model.type if dr else "ridge"


def _median(s: pd.Series) -> float:
    s = s.dropna()
    return float(s.median()) if len(s) else math.nan


def _category_rows(items: pd.DataFrame, target: int) -> list[list[str]]:
    rows: list[list[str]] = []
    if len(items) == 0:
        return rows
    for cat, g in items.groupby(items.category.replace("", "(none)")):
        eligible = g[g.eligible]
        share = float(eligible.reached_goal.mean()) if len(eligible) else math.nan
        rows.append(
            [
                escape(str(cat)),
                _num(len(g)),
                _pct(float(g.hours_to_first_impression.notna().mean())),
                _pct(share),
                _bar(share),
                _hours(_median(g.hours_to_first_impression)),
            ]
        )
    return rows
