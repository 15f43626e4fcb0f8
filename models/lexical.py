"""The lexical channel: TF-IDF over words and word pairs, projected to a dense block by truncated SVD.

A sentence embedding blurs the words that carry a catalog's signal when its items are named by
product-type words ("linen wide-leg trousers"); a sparse word model keeps them. :class:`LexicalModel`
is fitted on the training catalog's texts and turns any text into a unit-norm dense vector whose inner
products approximate the TF-IDF cosine, so the block can sit inside the one served item vector.

Serving needs numpy only: the analyzer, the vocabulary, the idf weights and the SVD basis travel in the
artifact (:meth:`LexicalModel.to_arrays` / :meth:`LexicalModel.from_arrays`); the same analyzer is used
to fit and to serve, so both see identical terms.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy.sparse import csr_matrix

from coldstart.errors import ArtifactError, InvalidInputError
from models.base import l2_normalize

_WORD = re.compile(r"(?u)\b\w\w+\b")
# A text longer than this is cut before analysis: serving cost stays bounded whatever the event holds.
MAX_CHARS = 20_000


def analyze(text: str) -> list[str]:
    """Lower-cased words of two or more characters and their adjacent pairs."""
    words = _WORD.findall(text[:MAX_CHARS].lower())
    return words + [f"{a} {b}" for a, b in itertools.pairwise(words)]


class LexicalModel:
    """Sublinear TF-IDF (words + word pairs) followed by a truncated SVD to ``dim`` components.

    Parameters
    ----------
    dim
        Components kept (fewer when the training matrix has lower rank).
    min_df
        A term must occur in at least this many training texts.
    max_terms
        Vocabulary cap (most frequent terms kept), bounds the artifact's size.
    seed
        Seed of the randomized SVD.
    """

    def __init__(self, dim: int = 128, *, min_df: int = 2, max_terms: int = 50_000, seed: int = 0) -> None:
        if dim < 1 or min_df < 1 or max_terms < 1:
            raise InvalidInputError(
                "lexical", (dim, min_df, max_terms), "dim, min_df, max_terms must be >= 1"
            )
        self.dim = dim
        self.min_df = min_df
        self.max_terms = max_terms
        self.seed = seed
        self._vocab: dict[str, int] = {}
        self._idf: NDArray[np.float32] = np.zeros(0, dtype=np.float32)
        self._basis: NDArray[np.float32] = np.zeros((0, 0), dtype=np.float32)

    @property
    def out_dim(self) -> int:
        """Width of the dense block (0 before :meth:`fit`)."""
        return int(self._basis.shape[1]) if self._basis.size else 0

    def fit(self, texts: Sequence[str]) -> LexicalModel:
        """Fit vocabulary, idf and SVD basis on the training texts; returns ``self``.

        Raises
        ------
        InvalidInputError
            No term reaches ``min_df`` (the catalog has no usable shared words).
        """
        # deferred import: scikit-learn
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        # min_df above the number of texts would reject everything on a tiny catalog
        min_df = min(self.min_df, max(1, len(texts) // 2))
        vectorizer = TfidfVectorizer(
            analyzer=analyze, sublinear_tf=True, min_df=min_df, max_features=self.max_terms, dtype=np.float32
        )
        try:
            matrix = vectorizer.fit_transform(list(texts))
        except ValueError as exc:  # sklearn: "empty vocabulary"
            raise InvalidInputError("texts", len(texts), f"no term occurs in {min_df} texts") from exc
        self._vocab = {str(t): int(i) for i, t in enumerate(vectorizer.get_feature_names_out())}
        self._idf = np.asarray(vectorizer.idf_, dtype=np.float32)
        rank = min(self.dim, matrix.shape[0] - 1, matrix.shape[1] - 1)
        if rank < 1:
            self._basis = np.eye(matrix.shape[1], dtype=np.float32)[
                :, : max(1, min(self.dim, matrix.shape[1]))
            ]
            return self
        svd = TruncatedSVD(n_components=rank, algorithm="randomized", n_iter=7, random_state=self.seed)
        svd.fit(matrix)
        self._basis = np.ascontiguousarray(svd.components_.T, dtype=np.float32)
        return self

    def truncate(self, dim: int) -> LexicalModel:
        """The same model keeping the first ``dim`` SVD components (the leading ones: the SVD of a
        smaller width, up to the randomized solver's error)."""
        out = LexicalModel(dim, min_df=self.min_df, max_terms=self.max_terms, seed=self.seed)
        out._vocab, out._idf = self._vocab, self._idf
        out._basis = np.ascontiguousarray(self._basis[:, :dim])
        return out

    def tfidf(self, texts: Sequence[str]) -> csr_matrix:
        """L2-normalised sparse TF-IDF rows ``(n, vocabulary)`` of ``texts`` (unknown terms dropped)."""
        if not self._vocab:
            raise InvalidInputError("lexical", "unfitted", "fit the model or load its arrays first")
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for text in texts:
            counts: dict[int, int] = {}
            for term in analyze(text if isinstance(text, str) else ""):
                col = self._vocab.get(term)
                if col is not None:
                    counts[col] = counts.get(col, 0) + 1
            cols = sorted(counts)
            indices.extend(cols)
            data.extend(1.0 + np.log(counts[c]) for c in cols)
            indptr.append(len(indices))
        matrix = csr_matrix(
            (np.asarray(data, dtype=np.float32), np.asarray(indices, dtype=np.int64), np.asarray(indptr)),
            shape=(len(texts), len(self._idf)),
        )
        matrix = matrix.multiply(self._idf[None, :]).tocsr()
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        scale = 1.0 / np.maximum(norms, 1e-12)
        return csr_matrix(matrix.multiply(scale[:, None]).astype(np.float32))

    def transform(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Unit-norm dense blocks ``(n, out_dim)``; a text with no known term gives a zero row."""
        dense = np.asarray(self.tfidf(texts) @ self._basis, dtype=np.float32)
        return l2_normalize(dense)

    def to_arrays(self, prefix: str = "lexical_") -> dict[str, NDArray[np.generic]]:
        """The fitted state as named arrays (saved in the artifact's ``representation.npz``)."""
        terms = sorted(self._vocab, key=self._vocab.__getitem__)
        return {
            f"{prefix}terms": np.asarray(terms, dtype=str),
            f"{prefix}idf": self._idf,
            f"{prefix}basis": self._basis,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, NDArray[np.generic]], prefix: str = "lexical_") -> LexicalModel:
        """Rebuild a fitted model from :meth:`to_arrays` output.

        Raises
        ------
        ArtifactError
            Missing or inconsistent arrays.
        """
        try:
            terms = [str(t) for t in arrays[f"{prefix}terms"]]
            idf = np.asarray(arrays[f"{prefix}idf"], dtype=np.float32)
            basis = np.asarray(arrays[f"{prefix}basis"], dtype=np.float32)
        except KeyError as exc:
            raise ArtifactError(f"lexical model arrays lack {exc.args[0]}") from exc
        if not (len(terms) == idf.shape[0] == basis.shape[0]) or basis.ndim != 2:
            raise ArtifactError("lexical model arrays disagree on the vocabulary size")
        model = cls(dim=max(1, basis.shape[1]))
        model._vocab = {t: i for i, t in enumerate(terms)}
        model._idf = idf
        model._basis = basis
        return model
