"""The warm-up evaluation report: ``<stem>.json`` and a markdown table (``models evaluate-warmup``)."""

from __future__ import annotations

import json
from pathlib import Path

from models.warmup.evaluate import METHODS, MIN_QUALIFYING


def write_results(result: dict[str, object], out_dir: Path, stem: str = "warmup") -> tuple[Path, Path]:
    """Write ``<stem>.json`` and ``<stem>.md`` (a table of mean ± std over seeds) into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    rows = result["rows"]
    std = result["std"]
    ks = result["ks"]
    counts = result["counts"]
    assert isinstance(rows, dict) and isinstance(std, dict) and isinstance(ks, list)
    assert isinstance(counts, dict)
    lines = [
        "# Warm-up: content-only vs behaviour-only vs blended",
        "",
        f"Dataset `{result['dataset']}`, {result['seeds']} seeds (mean ± std). Protocol and math: "
        "`models/warmup/evaluate.py`, `docs/warmup.md`. n/a: fewer than "
        f"{MIN_QUALIFYING} qualifying held-out items at that k.",
        "",
        "| method | " + " | ".join(f"k={k} NDCG@10 | k={k} Recall@20" for k in ks) + " |",
        "|---|" + "---|---|" * len(ks),
    ]
    for method in METHODS:
        cells = []
        for k in ks:
            r, s = rows[method][f"k={k}"], std[method][f"k={k}"]
            if not counts[f"k={k}"]["reported"]:
                cells.append("n/a | n/a")
                continue
            cells.append(
                f"{r['ndcg@10']:.4f} ± {s['ndcg@10']:.4f} | {r['recall@20']:.4f} ± {s['recall@20']:.4f}"
            )
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "| k | users scored | qualifying items (mean; min over seeds) |",
        "|---|---|---|",
    ]
    for k in ks:
        c = counts[f"k={k}"]
        lines.append(f"| {k} | {c['users']:.0f} | {c['items']:.0f}; {c['min_items']:.0f} |")
    lines.append("")
    md_path.write_text("\n".join(lines))
    return json_path, md_path
