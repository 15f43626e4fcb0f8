"""The HTML report: built from the offline store by `coldstart report`, self-contained, and rendered
without errors by headless Chromium (Debian chromium + chromium-driver, installed on demand by
ensure_chromium.sh)."""

from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.main import app
from coldstart.errors import InvalidInputError
from exploration.report import (
    InMemorySource,
    ItemListing,
    ReportConfig,
    build_report,
    compute_kpis,
    render_html,
)
from tests.analytics.browser import HeadlessChromium
from tests.analytics.synth import START, simulate

WEEK = timedelta(days=7)


@pytest.fixture(scope="module")
def sim():
    return simulate(
        n_items=60, n_decisions=400, n_candidates=6, k=2, hours=24 * 5, organic_impressions=300, seed=5
    )


def _listings(sim):
    return [
        ItemListing(
            i.item_id,
            i.listed_at,
            i.category,
            i.seller_id,
            i.listed_at + timedelta(hours=40) if int(i.item_id[4:]) % 3 == 0 else None,
        )
        for i in sim.items
    ]


@pytest.fixture(scope="module")
def html(sim):
    data = InMemorySource(_listings(sim), sim.decisions, sim.interactions).load(START, START + WEEK)
    result = build_report(data, ReportConfig(target_impressions=5, window_hours=24), progress=False)
    assert {e.policy for e in result.estimates} == {"logged", "uniform", "greedy"}
    assert {e.estimator for e in result.estimates} == {"ips", "snips", "dr"}
    return render_html(result)


def test_html_is_self_contained(html):
    assert html.startswith("<!DOCTYPE html>")
    assert len(re.findall(r'<img class="chart" [^>]*src="data:image/png;base64,', html)) == 6
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", html)  # nothing fetched from anywhere
    assert "http://" not in html and "https://" not in html and "<link" not in html
    for section in ("kpis", "exposure", "engagement", "ope", "definitions"):
        assert f'id="{section}"' in html


@pytest.mark.timeout(900)  # a fresh machine installs chromium first (tests/analytics/ensure_chromium.sh)
def test_report_renders_in_headless_chromium(html, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(html, encoding="utf-8")
    with HeadlessChromium() as browser:
        browser.open(page.as_uri())
        state = browser.run(
            "const b = document.body.dataset;"
            "return [document.readyState, b.chartsLoaded, b.chartsTotal,"
            " performance.getEntriesByType('resource').length, document.querySelectorAll('table').length]"
        )
        errors = [e for e in browser.console() if e["level"] in ("SEVERE", "WARNING")]
        browser.screenshot(tmp_path / "report.png")
        # the check can fail: a broken page is caught
        bad = tmp_path / "bad.html"
        bad.write_text("<html><body><script>throw new Error('boom')</script></body></html>")
        browser.open(bad.as_uri())
        caught = browser.console()
    assert errors == []
    ready, loaded, total, fetched, tables = state
    assert ready == "complete"
    assert loaded == total == "6"  # every chart decoded
    assert fetched == 0  # no network resource was requested
    assert tables >= 4
    png = (tmp_path / "report.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 50_000
    assert any("boom" in e["message"] for e in caught)


def test_cli_report_from_parquet_offline_store(sim, tmp_path):
    """`coldstart report` reads the embedded offline store (H4's ParquetOfflineLog) end to end."""
    from feature_repo.offline.parquet import ParquetOfflineLog
    from feature_repo.records import StoredItem

    store = ParquetOfflineLog(tmp_path / "offline")
    vec = np.ones(4, dtype=np.float32) / 2
    rows = []
    for it in _listings(sim):
        rows.append(
            StoredItem(it.item_id, vec, vec, True, True, "enc-1", it.listed_at, it.listed_at, it.category)
        )
        if it.graduated_at is not None:
            rows.append(
                StoredItem(
                    it.item_id,
                    vec,
                    vec,
                    True,
                    True,
                    "enc-1",
                    it.listed_at,
                    it.graduated_at,
                    it.category,
                    status="graduated",
                )
            )
    store.write_item_content([r for r in rows if r.status == "cold"])
    store.write_item_states(rows)
    store.write_decisions(sim.decisions)
    store.write_interactions(sim.interactions)
    store.close()
    # a saved model of the configured policy (VW by default), evaluated next to the baselines
    from coldstart.settings import get_settings
    from exploration.policies import build_policy, learn_decision

    model = build_policy(get_settings().exploration.policy, seed=0)
    for d in sim.decisions[:100]:
        learn_decision(model, d, {s.item_id: sim.rewards[(d.decision_id, s.position)] for s in d.slots})
    model.save(tmp_path / "model.bin")
    out = tmp_path / "out" / "report.html"
    runner = CliRunner()
    args = ["report", "--offline-dir", str(tmp_path / "offline"), "--out", str(out), "--no-progress"]
    window = ["--since", "2026-01-05", "--until", "2026-01-12T00:00Z", "--target-impressions", "5"]
    result = runner.invoke(app, [*args, *window, "--model", str(tmp_path / "model.bin")])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert f"{len(sim.decisions):,} decisions" in text and "softmax/sim-1" in text
    assert text.count("<td>model:model.bin</td>") == 4  # IPS, SNIPS and DR rows + its description
    # same KPIs as from memory
    data = InMemorySource(_listings(sim), sim.decisions, sim.interactions).load(START, START + WEEK)
    direct = compute_kpis(data, ReportConfig(target_impressions=5, window_hours=24)).summary
    assert f"{direct.n_new_items}</div>" in text and f"{100 * direct.share_reaching_goal:.1f}%</div>" in text
    # validation names the parameter
    bad = runner.invoke(app, [*args, "--since", "2026-01-12", "--until", "2026-01-05"])
    assert isinstance(bad.exception, InvalidInputError) and bad.exception.param == "since"
    bad = runner.invoke(app, [*args, "--since", "last tuesday", "--until", "2026-01-05"])
    assert isinstance(bad.exception, InvalidInputError) and bad.exception.param == "since"


def test_report_without_decisions_still_renders(tmp_path):
    items = [ItemListing("x", START + timedelta(hours=1))]
    data = InMemorySource(items, [], []).load(START, START + timedelta(days=1))
    result = build_report(data, progress=False)
    assert result.estimates == [] and result.notes
    html = render_html(result)
    assert "no exploration decisions" in html
    assert len(re.findall(r'src="data:image/png;base64,', html)) == 6


@pytest.mark.integration
def test_cli_report_from_postgres_production_profile(tmp_path):
    """The production profile: `coldstart report` reads the PostgreSQL offline tables (own schema)."""
    import uuid

    from feature_repo.offline.postgres import PostgresOfflineLog
    from feature_repo.records import StoredItem

    small = simulate(
        n_items=20, n_decisions=80, n_candidates=4, k=2, hours=48, organic_impressions=40, seed=9
    )
    schema = f"cs_h6_{uuid.uuid4().hex[:10]}"
    url = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    try:
        store = PostgresOfflineLog(url, schema)
    except Exception as exc:  # pragma: no cover - the machine runs PostgreSQL; say so clearly if not
        pytest.fail(f"PostgreSQL at 127.0.0.1:5432 is needed: {exc}")
    try:
        vec = np.ones(4, dtype=np.float32) / 2
        rows = [
            StoredItem(i.item_id, vec, vec, True, True, "enc-1", i.listed_at, i.listed_at, i.category)
            for i in small.items
        ]
        store.write_item_content(rows)
        store.write_item_states(rows)
        store.write_decisions(small.decisions)
        store.write_interactions(small.interactions)
        out = tmp_path / "report.html"
        env = {"COLDSTART_FEAST__TYPE": "production", "COLDSTART_FEAST__PG_SCHEMA": schema}
        args = [
            "report",
            "--since",
            "2026-01-05",
            "--until",
            "2026-01-08",
            "--out",
            str(out),
            "--no-progress",
        ]
        result = CliRunner().invoke(app, args, env=env)
        assert result.exit_code == 0, result.output
        text = out.read_text(encoding="utf-8")
        data = InMemorySource(_listings(small), small.decisions, small.interactions).load(
            START, START + timedelta(days=3)
        )
        k = compute_kpis(data, ReportConfig(window_hours=24)).summary
        assert f"{len(small.decisions)} decisions" in text and f"{k.n_new_items}</div>" in text
        assert f"{k.n_impressions:,} impressions" in text
    finally:
        store.drop_schema()
        store.close()
