"""The single error root of coldstart.

Every error the project raises on purpose derives from :class:`ColdstartError`. Only ``api/``
translates them into HTTP responses (see ``api/errors.py``); the CLI prints them and exits non-zero.
"""

from __future__ import annotations

import reprlib
from typing import Any

# Bounded repr of rejected values: hostile input can be megabytes long or nested thousands deep.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 200, 200, 60


class ColdstartError(Exception):
    """Root of every error coldstart raises on purpose."""


class ConfigError(ColdstartError):
    """A setting or configuration object is invalid or inconsistent."""


class InvalidInputError(ColdstartError, ValueError):
    """An input value is invalid; the message names the parameter and its value.

    Parameters
    ----------
    param
        Name of the offending parameter or field (dotted path for nested fields).
    value
        The value that was rejected.
    reason
        Why it was rejected.
    """

    def __init__(self, param: str, value: Any, reason: str) -> None:
        self.param = param
        self.value = value
        self.reason = reason
        shown = _REPR.repr(value)
        if len(shown) > 200:
            shown = shown[:197] + "..."
        super().__init__(f"{param}={shown}: {reason}")


class NotFoundError(ColdstartError, LookupError):
    """A requested entity (item, user, decision, artifact) does not exist."""


class ModalityError(InvalidInputError):
    """An item has neither a usable image nor usable text."""


class ArtifactError(ColdstartError):
    """A model artifact is missing, corrupt, or of an incompatible version."""


class BrokerError(ColdstartError):
    """The Kafka broker could not be started or reached."""


class StoreError(ColdstartError):
    """The feature store (online or offline) could not be read or written."""
