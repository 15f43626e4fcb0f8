"""The warm-up that ships with an artifact: calibrated and validated on the catalog it was trained on.

``coldstart models train`` calls :func:`models.warmup.fit.fit_served_warmup` with the served vectors
(the chosen representation's items and users): the posterior calibration is fitted on the training
positives, and the prior strength and the evidence gate are chosen on the cold-validation items' own
interactions with :func:`models.warmup.evaluate.select_warmup` (κ = ∞, "no behaviour", is in the
grid). The result is saved next to the encoder (``warmup.npz`` + the manifest's ``warmup`` section)
and the learner's warm-up stage builds the same :class:`PosteriorWarmup` from it
(:func:`load_served_warmup`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coldstart.errors import ArtifactError
from models.warmup.posterior import PosteriorCalibration, PosteriorWarmup

FILE = "warmup.npz"


@dataclass(frozen=True)
class ServedWarmup:
    """A calibrated warm-up and what validation chose for it."""

    calibration: PosteriorCalibration
    prior_strength: float  # relative κ; inf = content only
    min_positives: int  # the gate
    validation: dict[str, dict[str, float]]

    def card(self) -> dict[str, Any]:
        """The manifest's ``warmup`` section (JSON: ``inf`` written as a string)."""
        return {
            "type": "posterior",
            "prior_strength": "inf" if math.isinf(self.prior_strength) else self.prior_strength,
            "min_positives": self.min_positives,
            "validation": self.validation,
        }

    def save(self, directory: Path) -> None:
        """Write the calibration as ``warmup.npz``."""
        self.calibration.save(directory / FILE)


def build_posterior(served: ServedWarmup, *, warm_after: int = 20) -> PosteriorWarmup:
    """The posterior warm-up the learner runs from a served (calibrated) one."""
    return PosteriorWarmup(
        served.calibration,
        prior_strength=served.prior_strength,
        min_positives=served.min_positives,
        warm_after=warm_after,
    )


def load_served_warmup(directory: Path, card: dict[str, Any]) -> ServedWarmup | None:
    """The artifact's warm-up, or ``None`` when it was trained without one.

    Raises
    ------
    ArtifactError
        The manifest names a warm-up whose file is missing or malformed.
    """
    if not card:
        return None
    try:
        strength = card["prior_strength"]
        calibration = PosteriorCalibration.load(directory / FILE)
        return ServedWarmup(
            calibration,
            math.inf if strength == "inf" else float(strength),
            int(card["min_positives"]),
            dict(card.get("validation", {})),
        )
    except (KeyError, OSError, ValueError) as exc:
        raise ArtifactError(f"artifact {directory}: unreadable warm-up ({exc})") from exc
