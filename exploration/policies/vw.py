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
from exploration.policies.base import Arm, Context, Policy

_BAD = re.compile(r"[\s:|]")


@functools.lru_cache(maxsize=1 << 16)
def _token(s: str) -> str:
    """A VW-safe feature name (no whitespace, ``:`` or ``|``)."""
    return _BAD.sub("_", s) or "_"


def _num(v: float) -> str:
    return f"{v:.6g}"


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
            parts.append(f"{_token(key)}:{_num(float(value))}")
    return f"shared |C {' '.join(parts)} |U user:{_num(has_user)} nouser:{_num(1.0 - has_user)}"


@functools.lru_cache(maxsize=1024)
def _arm_format(keys: tuple[str, ...]) -> str:
    return "|A " + " ".join(f"{_token(k)}:%.6g" for k in keys) + " |I id=%s"


def arm_line(arm: Arm, label: str = "") -> str:
    """One action line: numeric features in ``A``, the item id in ``I`` (non-finite values dropped)."""
    values = tuple(arm.features.values())
    if math.isfinite(sum(values)):  # nan/inf anywhere (or an overflow) takes the filtering path
        line = _arm_format(tuple(arm.features)) % (*values, _token(arm.item_id))
    else:
        feats = " ".join(f"{_token(k)}:{v:.6g}" for k, v in arm.features.items() if math.isfinite(v))
        line = f"|A {feats} |I id={_token(arm.item_id)}"
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
        import pylibvw

        # pylibvw directly: pyvw.Workspace.predict wraps every line in a Python Example (3x the cost)
        text = "\n".join([shared_line(context), *(arm_line(a) for a in arms)])
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
        lines = [shared_line(context)]
        for i, arm in enumerate(arms):
            lines.append(arm_line(arm, f"0:{_num(-reward)}:{_num(propensity)}" if i == index else ""))
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
