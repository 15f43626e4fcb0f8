"""coldstart's ground floor: what every folder stands on and nothing of theirs.

The event and decision contracts of the topics (``contracts``, ``decisions``, ``topics``), the error
root (``errors``), the process settings (``settings``: the one place that reads each folder's
``config.py`` section) and ``process`` (children that die with their parent). The console script
and the demo sit at the top, in ``cli/``.
"""

__version__ = "0.1.0"
