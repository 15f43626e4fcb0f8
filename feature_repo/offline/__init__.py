"""The offline store (history of items, users, decisions and interactions); see :mod:`.base`."""

from feature_repo.offline.base import OfflineLog

__all__ = ["OfflineLog"]
