"""Vowpal Wabbit ``--cb_explore_adf`` policies (squarecb by default; epsilon-greedy, bag, cover).

VW's own exploration reduction produces the pmf; the base class floors it, applies pacing boosts and
samples. Examples are built from the request's context (namespace ``C``), a user-presence namespace
(``U``), the arm's numeric features (``A``) and the arm's item id (``I``); the default quadratic
interactions ``CA``, ``CI`` and ``UA`` let the model learn per-context preferences over features and
items. Scores: VW's cb_explore_adf does not expose its cost estimates, so the score of an arm is the
probability VW's exploration gives it (monotone in the estimated reward for squarecb and epsilon).
"""

from __future__ import annotations

import functools
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from coldstart.errors import ArtifactError
from exploration.config import VWPolicyConfig
from exploration.policies.base import Arm, ArmBatch, Context, Policy

_BAD = re.compile(r"[\s:|]")


@functools.lru_cache(maxsize=1 << 16)
def _token(s: str) -> str:
    """A VW-safe feature name (no whitespace, ``:`` or ``|``)."""
    return _BAD.sub("_", s) or "_"


def _num(v: float) -> str:
    return f"{v:.6g}"


#: Largest magnitude of a numeric context feature (the API refuses larger ones; stored decisions and
#: other callers are clipped here).
CONTEXT_CLIP = 1e9


def shared_line(context: Context) -> str:
    """``shared |C ... |U ...`` line of one request. Strings become ``key=value`` indicator features."""
    parts: list[str] = []
    has_user = 0.0
    for key, value in context.items():
        if key == "has_user":
            has_user = float(value) if not isinstance(value, str) else float(value not in ("", "0", "false"))
            continue
        if isinstance(value, str):
            parts.append(f"{_token(key)}={_token(value)}")
        elif value != 0.0 and np.isfinite(value):
            # clipped: one request's 1e308 would otherwise make every score (and, learned, the model) NaN
            clipped = min(max(float(value), -CONTEXT_CLIP), CONTEXT_CLIP)
            parts.append(f"{_token(key)}:{_num(clipped)}")
    return f"shared |C {' '.join(parts)} |U user:{_num(has_user)} nouser:{_num(1.0 - has_user)}"


#: Arm feature values are written as integers in millionths (``123456e-6``, which VW's float parser
#: reads like ``0.123456``): formatting 1,300 floats with ``%g`` was the largest cost of a 100-arm
#: request, integers format ~5x faster. Six decimals is the precision the slot service rounds to.
_SCALE = 1_000_000
#: Beyond this magnitude the scaled value would lose integer precision: such arms use ``%.6g``.
_SCALED_MAX = 1e12


@functools.lru_cache(maxsize=1024)
def _arm_format(keys: tuple[str, ...]) -> str:
    return "|A " + " ".join(f"{_token(k)}:%de-6" for k in keys) + " |I id=%s"


def _arm_line_g(arm: Arm) -> str:
    """Slow path: ``%.6g`` values, non-finite values dropped."""
    feats = " ".join(f"{_token(k)}:{v:.6g}" for k, v in arm.features.items() if math.isfinite(v))
    return f"|A {feats} |I id={_token(arm.item_id)}"


@functools.lru_cache(maxsize=256)
def _block_format(keys: tuple[str, ...], n: int) -> str:
    """:func:`_arm_format` for ``n`` arms, one per line (one ``%`` formats a whole request)."""
    return "\n".join([_arm_format(keys)] * n)


def arm_text(arms: Sequence[Arm]) -> str:
    """Action lines of ``arms`` joined by newlines: numeric features in ``A``, the item id in ``I``.

    Arms sharing one feature-key order (an :class:`ArmBatch`, or dicts with the same keys) are
    formatted with one ``%`` over all their values; others, and arms with non-finite or huge values,
    line by line (non-finite values dropped). Item ids never contain a newline (:func:`_token`).
    """
    n = len(arms)
    if n == 0:
        return ""
    if isinstance(arms, ArmBatch):
        keys, values, ids = arms.feature_names, arms.matrix, arms.item_ids
    else:
        keys = tuple(arms[0].features)
        if not all(tuple(a.features) == keys for a in arms):
            return "\n".join([_arm_line(a) for a in arms])
        values = np.array([list(a.features.values()) for a in arms], dtype=np.float64).reshape(n, len(keys))
        ids = [a.item_id for a in arms]
    if np.isfinite(values).all() and (values.size == 0 or float(np.abs(values).max()) < _SCALED_MAX):
        rows: list[list[Any]] = np.rint(values * _SCALE).astype(np.int64).tolist()
        flat: list[Any] = []
        for row, token in zip(rows, map(_token, ids), strict=True):
            flat += row
            flat.append(token)
        return _block_format(keys, n) % tuple(flat)
    return "\n".join([_arm_line(a) for a in arms])


def arm_lines(arms: Sequence[Arm]) -> list[str]:
    """:func:`arm_text` as one string per arm."""
    text = arm_text(arms)
    return text.split("\n") if text else []


def _arm_line(arm: Arm) -> str:
    values = list(arm.features.values())
    vals = np.asarray(values, dtype=np.float64)
    if np.isfinite(vals).all() and (vals.size == 0 or float(np.abs(vals).max()) < _SCALED_MAX):
        scaled = np.rint(vals * _SCALE).astype(np.int64).tolist()
        return _arm_format(tuple(arm.features)) % (*scaled, _token(arm.item_id))
    return _arm_line_g(arm)


def arm_line(arm: Arm, label: str = "") -> str:
    """One action line: numeric features in ``A``, the item id in ``I`` (non-finite values dropped)."""
    line = _arm_line(arm)
    return f"{label} {line}" if label else line


class VWPolicy(Policy):
    """Contextual bandit over action-dependent features with VW's ``cb_explore_adf``.

    Parameters
    ----------
    config
        Exploration algorithm and VW hyperparameters.
    seed
        Seeds both VW (``--random_seed``, used by bag and cover) and the slot sampler.
    """

    def __init__(self, config: VWPolicyConfig | None = None, *, seed: int = 0) -> None:
        self.config = config or VWPolicyConfig()
        super().__init__(min_propensity=self.config.min_propensity, seed=seed)
        self.name = f"vw-{self.config.exploration}"
        self._ws = self._new_workspace()

    def vw_args(self) -> str:
        """The VW command line of this policy."""
        c = self.config
        explore = {
            "squarecb": f"--squarecb --gamma_scale {c.gamma_scale} --gamma_exponent {c.gamma_exponent}",
            "epsilon": f"--epsilon {c.epsilon}",
            "bag": f"--bag {c.bag} --epsilon {c.epsilon}",
            "cover": f"--cover {c.cover} --epsilon {c.epsilon}",
        }[c.exploration]
        quad = " ".join(f"-q {q}" for q in c.interactions)
        return (
            f"--cb_explore_adf {explore} {quad} -b {c.bits} -l {c.learning_rate} "
            f"--random_seed {self.seed} --quiet"
        )

    def _new_workspace(self) -> object:
        import vowpalwabbit

        return vowpalwabbit.Workspace(self.vw_args())

    def _predict(
        self, context: Context, arms: Sequence[Arm]
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        # deferred import: vowpalwabbit
        import pylibvw

        # pylibvw directly: pyvw.Workspace.predict wraps every line in a Python Example (3x the cost)
        text = f"{shared_line(context)}\n{arm_text(arms)}"
        ws: Any = self._ws
        examples = ws._parse(text)
        try:
            pylibvw.vw.predict_multi(ws, examples)
            probs = np.asarray(examples[0].get_action_scores(), dtype=np.float64)  # indexed by action
        finally:
            pylibvw.vw._finish_example_multi_ex(ws, examples)
        return probs, probs.copy()

    def _learn(
        self, context: Context, arms: Sequence[Arm], index: int, propensity: float, reward: float
    ) -> None:
        lines = [shared_line(context), *arm_lines(arms)]
        lines[index + 1] = f"0:{_num(-reward)}:{_num(propensity)} {lines[index + 1]}"
        self._ws.learn(lines)  # type: ignore[attr-defined]

    def _dump(self) -> bytes:
        fd, name = tempfile.mkstemp(suffix=".vw")
        os.close(fd)
        try:
            self._ws.save(name)  # type: ignore[attr-defined]
            return Path(name).read_bytes()
        finally:
            os.unlink(name)

    def _restore(self, data: bytes) -> None:
        import vowpalwabbit

        if not data:
            raise ArtifactError("empty VW model")
        fd, name = tempfile.mkstemp(suffix=".vw")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            try:
                ws = vowpalwabbit.Workspace(f"--quiet -i {name}")
            except RuntimeError as exc:
                raise ArtifactError(f"cannot load VW model: {exc}") from exc
        finally:
            os.unlink(name)
        old, self._ws = self._ws, ws
        old.finish()  # type: ignore[attr-defined]
