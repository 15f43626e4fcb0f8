"""Which warm-up rules a learner runs, and the ``model_version`` its rows carry: the posterior the
served encoder artifact calibrated (:mod:`models.warmup.served`) when it has one, else the shrinkage
warm-up of the settings. Both layouts (:mod:`stream.warmup_stage`, :mod:`stream.warmup_group`) build
it here."""

from __future__ import annotations

import logging

from coldstart.errors import NotFoundError
from coldstart.settings import Settings
from models.artifact import read_manifest, resolve_artifact
from models.warmup import WarmupModel
from models.warmup.served import ServedWarmup, build_posterior, load_served_warmup
from models.warmup.shrinkage import build_shrinkage
from stream.config import WarmupStageConfig

log = logging.getLogger(__name__)


def build_warmup_model(
    config: WarmupStageConfig, served: ServedWarmup | None = None, served_version: str = ""
) -> tuple[WarmupModel, str]:
    """The warm-up rules a stage runs and the ``model_version`` its rows carry: the served posterior
    when there is one, else the shrinkage warm-up of ``config``."""
    model: WarmupModel
    if served is not None:
        model = build_posterior(served, warm_after=config.shrinkage.warm_after)
        version = config.model_version(served.card(), served_version)
    else:
        model = build_shrinkage(config.shrinkage)
        version = config.model_version()
    model.max_tracked_events = config.max_tracked_events
    return model, version


def served_warmup(settings: Settings) -> tuple[ServedWarmup | None, str]:
    """The warm-up of the encoder artifact the settings serve, and that artifact's version; ``None``
    (the shrinkage warm-up runs) when there is no artifact or it carries no warm-up."""
    try:
        path = resolve_artifact(settings.models.artifact, settings.models.artifacts_dir)
        manifest = read_manifest(path)
        served = load_served_warmup(path, manifest.warmup)
    except NotFoundError as exc:
        log.warning("warm-up: no encoder artifact (%s); running the shrinkage warm-up", exc)
        return None, ""
    if served is None:
        log.warning("warm-up: artifact %s has no calibrated warm-up; running shrinkage", manifest.version)
        return None, ""
    log.info(
        "warm-up: posterior from %s (prior strength %s, gate %d positives)",
        manifest.version,
        served.card()["prior_strength"],
        served.min_positives,
    )
    return served, manifest.version
