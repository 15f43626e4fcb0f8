"""The decision sink interface: where the slot service hands every decision it makes."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

from coldstart.decisions import LoggedDecision

log = logging.getLogger(__name__)


def log_drops(dropped: int, new: int) -> None:
    """Log the first drop and then one per 1,000 (``dropped`` so far, the last ``new`` of them now)."""
    if (dropped - 1) % 1000 < new:
        log.error("decision queue full: %d decisions dropped so far", dropped)


class DecisionSink(ABC):
    """Receives every decision the slot service makes."""

    @abstractmethod
    def publish(self, decision: LoggedDecision) -> None:
        """Hand over one decision or draft (non-blocking: a draft becomes a validated
        :class:`~coldstart.decisions.Decision` off the request path)."""

    def flush(self, timeout_s: float = 10.0) -> None:  # noqa: B027 - optional hook
        """Block until everything published so far is durable."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush and release resources."""
