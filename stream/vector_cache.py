"""A content-addressed vector cache for the encoder worker (off by default).

Re-listings of unchanged items (a seller edits the price, a catalog is re-imported, a replay lists
the same catalog again) would re-run the image and text towers for the same bytes. With
``kafka.encode.vector_cache_dir`` set, the worker's encoder is wrapped in a :class:`CachedEncoder`:
an item's embedding is looked up by ``sha256(encoder version, text, image bytes)`` and only the
misses are encoded (one call) and stored. The key covers everything the vectors depend on, so a hit
is exactly what the encoder would return (same artifact, same content); a new artifact version
misses. The store is one SQLite file (``vectors.sqlite``) that several workers may share.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from models.records import ItemContent, ItemEmbedding
from stream.encode_worker import Encoder

_SCHEMA = """CREATE TABLE IF NOT EXISTS vectors (
    key TEXT PRIMARY KEY, content BLOB NOT NULL, item BLOB NOT NULL,
    image_ok INTEGER NOT NULL, text_ok INTEGER NOT NULL, version TEXT NOT NULL)"""


def content_key(version: str, content: ItemContent) -> str:
    """``sha256`` hex of the encoder version, the text and the image bytes (not the item id)."""
    h = hashlib.sha256()
    for part in (version.encode(), content.text.encode(), content.image or b"\x00no-image"):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()


class CachedEncoder:
    """An :class:`~stream.encode_worker.Encoder` that serves repeated contents from a SQLite cache.

    Parameters
    ----------
    encoder
        The wrapped encoder (``.encode``, ``.version``).
    cache_dir
        Directory of ``vectors.sqlite`` (created).
    """

    def __init__(self, encoder: Encoder, cache_dir: Path) -> None:
        self.encoder = encoder
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.cache_dir / "vectors.sqlite", timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(_SCHEMA)
        self._db.commit()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def version(self) -> str:
        """The wrapped encoder's artifact version."""
        return self.encoder.version

    def encode(self, items: Sequence[ItemContent]) -> list[ItemEmbedding]:
        """One embedding per item, in order; cache misses are encoded together and stored."""
        version = self.encoder.version
        keys = [content_key(version, c) for c in items]
        with self._lock:
            found: dict[str, ItemEmbedding] = {}
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                rows = self._db.execute(
                    f"SELECT key, content, item, image_ok, text_ok, version FROM vectors "
                    f"WHERE key IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                for key, content, item, image_ok, text_ok, ver in rows:
                    found[key] = ItemEmbedding(
                        item_id="",
                        content_vector=np.frombuffer(content, dtype=np.float32).copy(),
                        item_vector=np.frombuffer(item, dtype=np.float32).copy(),
                        image_ok=bool(image_ok),
                        text_ok=bool(text_ok),
                        encoder_version=ver,
                    )
        missing = [i for i, k in enumerate(keys) if k not in found]
        if missing:
            encoded = list(self.encoder.encode([items[i] for i in missing]))
            if len(encoded) != len(missing):
                return encoded  # let the worker's own check report the mismatch
            rows_new = []
            for i, emb in zip(missing, encoded, strict=True):
                found[keys[i]] = emb
                rows_new.append(
                    (
                        keys[i],
                        np.asarray(emb.content_vector, dtype=np.float32).tobytes(),
                        np.asarray(emb.item_vector, dtype=np.float32).tobytes(),
                        int(emb.image_ok),
                        int(emb.text_ok),
                        emb.encoder_version,
                    )
                )
            with self._lock:
                self._db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?, ?, ?, ?)", rows_new)
                self._db.commit()
        self.hits += len(items) - len(missing)
        self.misses += len(missing)
        return [replace(found[k], item_id=c.item_id) for k, c in zip(keys, items, strict=True)]

    def close(self) -> None:
        """Close the cache file."""
        with self._lock:
            self._db.close()
