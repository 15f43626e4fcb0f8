"""The repository as plain Feast sees it: `feast plan` on an unchanged repository changes nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2] / "feature_repo"
FEAST = str(Path(sys.executable).with_name("feast"))

pytestmark = pytest.mark.timeout(300)


def test_feast_plan_on_an_unchanged_repo_reports_no_change(tmp_path: Path) -> None:
    for name in ("feature_store.yaml", "repo.py", ".feastignore"):
        shutil.copy(REPO / name, tmp_path / name)

    def feast(*args: str) -> str:
        done = subprocess.run([FEAST, *args], cwd=tmp_path, capture_output=True, text=True, timeout=240)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    feast("apply")
    for _ in range(2):
        out = feast("plan")
        assert "Updated" not in out and "Created" not in out and "Deleted" not in out, out[:2000]
        assert "No changes to infrastructure" in out
