"""``coldstart demo``: the main job on the embedded default (wired by the integrator)."""

from __future__ import annotations

from coldstart.settings import Settings


def run_demo(settings: Settings) -> None:
    """Bring up broker, encoder worker and API; stream the MovieLens catalog; print a summary."""
    raise NotImplementedError
