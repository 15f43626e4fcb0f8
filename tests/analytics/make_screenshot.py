"""Regenerate docs/report_screenshot.png: a synthetic week of marketplace traffic is written to a
parquet offline store, ``coldstart report`` renders it, headless Chromium takes a full-page shot.

    .venv/bin/python -m tests.analytics.make_screenshot docs/report_screenshot.png
"""

from __future__ import annotations

import sys
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from cli.main import app
from feature_repo.offline.parquet import ParquetOfflineLog
from feature_repo.records import StoredItem
from tests.analytics.browser import HeadlessChromium
from tests.analytics.synth import simulate


def main(out: Path) -> None:
    sim = simulate(
        n_items=150, n_decisions=2500, n_candidates=8, k=3, hours=24 * 7, organic_impressions=1500, seed=7
    )
    with tempfile.TemporaryDirectory() as tmp:
        store = ParquetOfflineLog(Path(tmp) / "offline")
        vec = np.full(4, 0.5, dtype=np.float32)
        rows = [
            StoredItem(i.item_id, vec, vec, True, True, "enc-1", i.listed_at, i.listed_at, i.category)
            for i in sim.items
        ]
        grads = [
            StoredItem(
                i.item_id,
                vec,
                vec,
                True,
                True,
                "enc-1",
                i.listed_at,
                i.listed_at + timedelta(hours=36 + n % 48),
                i.category,
                status="graduated",
            )
            for n, i in enumerate(sim.items)
            if n % 3 == 0
        ]
        store.write_item_content(rows)
        store.write_item_states(rows + grads)
        store.write_decisions(sim.decisions)
        store.write_interactions(sim.interactions)
        store.close()
        html = Path(tmp) / "report.html"
        args = ["report", "--offline-dir", f"{tmp}/offline", "--out", str(html), "--since", "2026-01-05"]
        result = CliRunner().invoke(app, [*args, "--until", "2026-01-12", "--target-impressions", "20"])
        if result.exit_code != 0:
            raise SystemExit(result.output)
        with HeadlessChromium(width=1280, height=900) as browser:
            browser.open(html.as_uri())
            errors = [e for e in browser.console() if e["level"] in ("SEVERE", "WARNING")]
            if errors:
                raise SystemExit(f"console errors: {errors}")
            browser.screenshot(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/report_screenshot.png"))
