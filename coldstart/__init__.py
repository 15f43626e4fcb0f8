"""coldstart: the application shell (settings, the error root, the ``coldstart`` CLI).

The concepts live in their own top-level packages: ``models`` (encoders, item tower, warm-up math),
``stream`` (Kafka contracts, producers, consumers), ``exploration`` (bandit, pool, pacing, OPE),
``api`` (FastAPI app) and ``feature_repo`` (the Feast repository).
"""

__version__ = "0.1.0"
