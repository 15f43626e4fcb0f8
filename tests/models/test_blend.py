"""The served representation: lexical channel, weighted blocks, and selection on cold-validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from coldstart.errors import ArtifactError
from models.baselines import Features, ItemSet, TrainSet
from models.blend import BlendRanker
from models.eval_protocol import ranking_metrics, relevance_matrix, split_items, validation_score
from models.lexical import MAX_CHARS, LexicalModel
from models.representation import BlockSpec, ContentProjection, Representation


def test_lexical_model_matches_words_and_round_trips() -> None:
    texts = [f"zorvat shirt number {i}" for i in range(10)] + [f"quillop lamp number {i}" for i in range(10)]
    model = LexicalModel(dim=8).fit(texts)
    vecs = model.transform(["zorvat linen", "quillop brass", "zorvat", ""])
    assert vecs.shape == (4, model.out_dim)
    np.testing.assert_allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, atol=1e-5)
    assert not vecs[3].any()  # no known term: zero row, not NaN
    assert vecs[0] @ vecs[2] > 0.9 > vecs[0] @ vecs[1]
    again = LexicalModel.from_arrays(model.to_arrays())
    np.testing.assert_array_equal(again.transform(texts), model.transform(texts))
    # the sparse rows equal sklearn's TF-IDF on the same vocabulary
    from sklearn.feature_extraction.text import TfidfVectorizer

    from models.lexical import analyze

    ref = TfidfVectorizer(analyzer=analyze, sublinear_tf=True, min_df=2).fit(texts)
    np.testing.assert_allclose(model.tfidf(texts).toarray(), ref.transform(texts).toarray(), atol=1e-6)


def test_lexical_model_bounds_hostile_text() -> None:
    model = LexicalModel(dim=4).fit(["alpha beta", "alpha gamma", "beta gamma"])
    huge = "alpha " * 1_000_000
    assert model.tfidf([huge]).sum() > 0  # analysed, but only the first MAX_CHARS characters
    assert len(huge) > MAX_CHARS
    with pytest.raises(ArtifactError):
        LexicalModel.from_arrays({"lexical_terms": np.asarray(["a"]), "lexical_idf": np.ones(2)})


def test_representation_inner_product_is_the_weighted_block_sum(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    lexical = LexicalModel(dim=4).fit(["red boots", "blue boots", "red hat", "blue hat", "green scarf"])
    image, text = rng.normal(size=(6, 10)).astype(np.float32), rng.normal(size=(6, 7)).astype(np.float32)
    ok = np.ones(6, dtype=bool)
    content = ContentProjection.fit(image, text, ok, ok, dim=3)
    rep = Representation(
        [
            BlockSpec("tower", 5, 1.0, 2.0),
            BlockSpec("content", content.basis.shape[1], 0.5, 0.25),
            BlockSpec("lexical", lexical.out_dim, 2.0, 0.5),
        ],
        lexical=lexical,
        content=content,
    )
    tower = rng.normal(size=(6, 5)).astype(np.float32)
    texts = ["red boots", "blue hat", "green", "", "red scarf", "boots"]
    blocks = rep.item_blocks(tower, image, text, ok, ok, texts)
    items = rep.compose_items(blocks)
    assert items.shape == (6, rep.dim)
    prof = {n: rng.normal(size=(3, b.shape[1])).astype(np.float32) for n, b in blocks.items()}
    users = rep.compose_users(prof)
    unit = {n: p / np.linalg.norm(p, axis=1, keepdims=True) for n, p in prof.items()}
    expected = sum(
        w / s * unit[n] @ blocks[n].T
        for n, w, s in (("tower", 1.0, 2.0), ("content", 0.5, 0.25), ("lexical", 2.0, 0.5))
    )
    np.testing.assert_allclose(users @ items.T, expected, rtol=1e-4, atol=1e-5)
    rep.save(tmp_path)
    again = Representation.load(tmp_path)
    again_items = again.compose_items(again.item_blocks(tower, image, text, ok, ok, texts))
    np.testing.assert_allclose(again_items, items, atol=1e-6)
    (tmp_path / "representation.npz").write_bytes(b"not a zip")
    with pytest.raises(ArtifactError):
        Representation.load(tmp_path)


def _planted(signal: str, seed: int = 0, n_items: int = 600, n_types: int = 12, n_users: int = 200):
    """Items of hidden types; users buy within one type; only ``signal`` (words or features) shows it."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, size=n_items)
    centres = rng.normal(size=(n_types, 16))
    noise = [f"w{j}" for j in range(300)]
    texts, image = [], np.zeros((n_items, 16), dtype=np.float32)
    for i, t in enumerate(types):
        filler = " ".join(rng.choice(noise, size=8))
        texts.append(f"typeword{t} {filler}" if signal == "lexical" else filler)
        image[i] = centres[t] + 0.3 * rng.normal(size=16) if signal == "content" else rng.normal(size=16)
    text = rng.normal(size=(n_items, 8)).astype(np.float32)
    ok = np.ones(n_items, dtype=bool)
    ids = [f"i{i}" for i in range(n_items)]
    feats = Features(ids, image, text, ok, ok)
    rows = []
    for u in range(n_users):
        pool = np.flatnonzero(types == rng.integers(n_types))
        rows += [(f"u{u}", ids[j]) for j in rng.choice(pool, size=min(len(pool), 12), replace=False)]
    return feats, dict(zip(ids, texts, strict=True)), pd.DataFrame(rows, columns=["user_id", "item_id"])


@pytest.mark.parametrize("signal", ["lexical", "content"])
def test_selection_finds_the_planted_channel(signal: str) -> None:
    feats, texts, positives = _planted(signal)
    split = split_items(feats.item_ids, 0)
    part = lambda ids: ItemSet(feats.select(ids), [texts[i] for i in ids])  # noqa: E731
    train = TrainSet(
        part(split.train), positives[positives["item_id"].isin(split.train)].reset_index(drop=True)
    )

    def held_out(ids: list[str]) -> tuple[list[str], ItemSet, np.ndarray]:
        pos = positives[positives["item_id"].isin(ids)]
        users = sorted(set(pos["user_id"]) & set(train.positives["user_id"]))
        return users, part(ids), relevance_matrix(pos, users, ids)

    v_users, v_items, v_rel = held_out(split.val)
    blend = BlendRanker(None, lexical_dims=(8, 16), content_dim=8)
    blend.fit(train, validate=lambda r: validation_score(r.score(v_users, v_items), v_rel))
    assert blend.shipped in (signal, "hybrid")
    assert blend.chosen[blend.shipped].get(signal, 0.0) > 0
    t_users, t_items, t_rel = held_out(split.test)
    shipped = ranking_metrics(blend.score(t_users, t_items), t_rel)["ndcg@10"]
    other = "content" if signal == "lexical" else "lexical"
    wrong = ranking_metrics(blend.use(other).score(t_users, t_items), t_rel)["ndcg@10"]
    assert shipped > 3 * wrong  # the uninformative channel ranks near random
    card = blend.use(blend.shipped).describe()
    assert card["shipped"] == blend.shipped and set(card["validation"]) == {"lexical", "content", "hybrid"}
    users, vecs = blend.user_vectors()
    rep = blend.representation()
    assert vecs.shape == (len(users), rep.dim)
