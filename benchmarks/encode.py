"""Encoding throughput of the offline encoder: torch vs onnxruntime, batch 1/8/32, full text vs title,
and the cost of serving the weighted blocks (tower + content + lexical) over the tower output alone.

Prints ONE JSON object. Items are real MovieLens posters + plots (``../shared/data/movielens``); each
item is encoded end to end (JPEG decode + preprocessing + image tower + tokenization + text tower + item
tower). "full" = title + plot (capped at ``--max-text-tokens``), "title" = title only: text length is the
main throughput knob. Both runtimes run the same towers (pretrained EfficientNet-Lite0 + MiniLM with
untrained heads: throughput does not depend on the head weights) in the same process, so the
``onnx_over_torch`` ratios are robust to machine noise; absolute numbers are not.

Usage::

    .venv/bin/python benchmarks/encode.py [--items 48] [--threads 2] [--max-text-tokens 256]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models.config import OfflineEncoderConfig
from models.records import ItemContent

BATCHES = (1, 8, 32)
ROUNDS = 2


def load_items(movielens: Path, n: int) -> tuple[list[ItemContent], list[ItemContent]]:
    """``n`` movies having a poster and a plot: (title + plot items, title-only items)."""
    posters = movielens / "ml1m_posters"
    meta = movielens / "ml-1m_meta" / "movies_extrainfos_MeLU.dat"
    full: list[ItemContent] = []
    title: list[ItemContent] = []
    with meta.open(encoding="latin-1") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("::")
            if len(parts) < 10:
                continue
            movie_id, name, plot = parts[0], parts[1], parts[9]
            poster = posters / f"{movie_id}.jpg"
            if not plot.strip() or plot.strip() == "N/A" or not poster.is_file():
                continue
            img = poster.read_bytes()
            full.append(ItemContent(movie_id, f"{name}. {parts[5]}. {plot}", img))
            title.append(ItemContent(movie_id, name, img))
            if len(full) >= n:
                break
    return full, title


def throughput(encoder, items: list[ItemContent], batch: int, min_items: int) -> float:
    """Items per second of ``encoder.encode`` over ``items`` in chunks of ``batch`` (after a warm-up)."""
    encoder.batch_size = batch
    encoder.encode(items[:batch])
    todo = items[: max(min_items, batch)]
    start = time.perf_counter()
    for s in range(0, len(todo), batch):
        encoder.encode(todo[s : s + batch])
    return len(todo) / (time.perf_counter() - start)


def served_representation(texts: list[str], image_dim: int, text_dim: int):  # type: ignore[no-untyped-def]
    """Tower + content + lexical blocks at their widest (lexical 512 dims over the given texts); the
    content projection is fitted on random features (its cost does not depend on its values)."""
    # deferred import: onnxruntime, torch
    import numpy as np

    from models.lexical import LexicalModel
    from models.representation import BlockSpec, ContentProjection, Representation

    rng = np.random.default_rng(0)
    lexical = LexicalModel(512).fit(texts)
    ok = np.ones(256, dtype=bool)
    content = ContentProjection.fit(
        rng.normal(size=(256, image_dim)).astype(np.float32),
        rng.normal(size=(256, text_dim)).astype(np.float32),
        ok,
        ok,
        dim=128,
    )
    blocks = [
        BlockSpec("tower", 16, 1.0, 1.0),
        BlockSpec("content", content.basis.shape[1], 1.0, 1.0),
        BlockSpec("lexical", lexical.out_dim, 1.0, 1.0),
    ]
    return Representation(blocks, lexical=lexical, content=content)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--movielens", type=Path, default=ROOT / ".." / "shared" / "data" / "movielens")
    parser.add_argument("--items", type=int, default=48, help="items per measurement (batch 1 uses a third)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-text-tokens", type=int, default=256)
    parser.add_argument("--artifact", type=Path, default=None, help="existing offline artifact to reuse")
    args = parser.parse_args()

    # deferred import: onnxruntime, torch, torch, onnx
    import numpy as np
    import torch

    from models.export import build_artifact
    from models.serving import OnnxItemEncoder
    from models.testing import tiny_item_tower
    from models.torch_encoder import TorchItemEncoder
    from models.towers import build_towers

    torch.set_num_threads(args.threads)
    full, title = load_items(args.movielens, max(args.items, 32))
    fit_texts = [it.text for it in load_items(args.movielens, 600)[0]]
    t0 = time.perf_counter()
    towers = build_towers(OfflineEncoderConfig(max_text_tokens=args.max_text_tokens), seed=0)
    item_tower = tiny_item_tower(towers.image_dim, towers.text_dim, seed=0)
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        path = args.artifact or build_artifact(towers, item_tower, Path(tmp), notes="benchmark")
        export_s = time.perf_counter() - t0
        served_path = build_artifact(
            towers,
            item_tower,
            Path(tmp) / "served",
            notes="benchmark, served blocks",
            representation=served_representation(fit_texts, towers.image_dim, towers.text_dim),
        )
        encoders = {
            "torch": TorchItemEncoder(towers, item_tower),
            "onnxruntime": OnnxItemEncoder(path, threads=args.threads, verify=False),
            # the same graphs serving tower + content + lexical blocks (the widest representation)
            "onnxruntime_blocks": OnnxItemEncoder(served_path, threads=args.threads, verify=False),
        }
        results = {runtime: {"full": {}, "title": {}} for runtime in encoders}
        # the runtimes take turns at every (mode, batch), best of ROUNDS: drift in the machine's load
        # between two long back-to-back runs would otherwise show up in the ratios
        for mode, items in (("full", full), ("title", title)):
            for b in BATCHES:
                n = args.items if b > 1 else max(8, args.items // 3)
                for _ in range(ROUNDS):
                    for runtime, enc in encoders.items():
                        got = round(throughput(enc, items, b, n), 2)
                        results[runtime][mode][str(b)] = max(results[runtime][mode].get(str(b), 0.0), got)
        onnx_enc = encoders["onnxruntime"]
        tok = onnx_enc.spec.tokenizer
        mean_tokens = {
            mode: float(np.mean(tok([it.text for it in items])[1].sum(axis=1)))
            for mode, items in (("full", full), ("title", title))
        }
        providers = list(getattr(onnx_enc, "providers", []))
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    ratios = {
        "onnx_over_torch": {
            mode: {
                b: round(results["onnxruntime"][mode][b] / results["torch"][mode][b], 3)
                for b in results["torch"][mode]
            }
            for mode in ("full", "title")
        },
        # serving cost of the lexical channel: the served blocks against the tower output alone
        "blocks_over_plain": {
            mode: {
                b: round(results["onnxruntime_blocks"][mode][b] / results["onnxruntime"][mode][b], 3)
                for b in results["onnxruntime"][mode]
            }
            for mode in ("full", "title")
        },
        "title_over_full": {
            rt: {b: round(results[rt]["title"][b] / results[rt]["full"][b], 3) for b in results[rt]["full"]}
            for rt in results
        },
    }
    print(
        json.dumps(
            {
                "benchmark": "encode",
                "unit": "items/s (image+text, end to end)",
                "encoder": "offline (EfficientNet-Lite0 224px + all-MiniLM-L6-v2)",
                "items": args.items,
                "threads": args.threads,
                "max_text_tokens": args.max_text_tokens,
                "mean_tokens": {k: round(v, 1) for k, v in mean_tokens.items()},
                "providers": providers,
                "results": results,
                "ratios": ratios,
                "build_s": round(build_s, 1),
                "export_s": round(export_s, 1),
                "peak_rss_mb": round(peak_rss_mb, 1),
                "python": platform.python_version(),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
