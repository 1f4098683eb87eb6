"""`recsys train`: fit a model on the logs and save it as a new registry version.

The two-tower trains for minutes (``twotower.train``); the peers it is compared with, EASE and ALS,
are fitted as the evaluation fits them (hyper-parameters chosen on each user's latest training
events) and saved, so that serving loads them instead of fitting per request.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

from recsys import registry, strategies
from recsys.errors import RecsysError
from recsys.events import load_history
from recsys.splits import for_training
from recsys.twotower import TwoTowerConfig

#: Shares a two-tower configuration takes, each in [0, 1).
SHARES = ("val_fraction", "holdout", "cold_share", "id_dropout")


def two_tower_config(**given) -> TwoTowerConfig:
    """The default configuration with the ``given`` values that are not None, checked."""
    config = dataclasses.replace(TwoTowerConfig(), **{k: v for k, v in given.items() if v is not None})
    for name in SHARES:
        if not 0 <= getattr(config, name) < 1:
            raise RecsysError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(config, name)}")
    return config


def train_peer(
    recommender,
    name: str,
    *,
    holdout: float = 0.0,
    split: str = "temporal",
    seed: int = 0,
    params: Mapping | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Fit a strategy that saves a model (EASE, ALS...) on the logs, minus the ``holdout`` of
    ``split`` (for an honest `recsys evaluate --holdout`), and register the version. ``params``:
    hyper-parameters to use instead of tuning them."""
    cls = strategies.get(name)
    if not cls.needs_model or not cls.fits_in_evaluation:
        raise RecsysError(f"{name} is not fitted on the logs this way")
    if not 0 <= holdout < 1:
        raise RecsysError(f"--holdout must be in [0, 1), got {holdout}")
    started = time.perf_counter()
    workspace = recommender.workspace
    history = load_history(workspace)
    history, held_out = for_training(history, holdout, split)
    if not history:
        raise RecsysError("no interactions to train on: record some, or `recsys simulate`")
    log(f"fitting {name} on {sum(len(v) for v in history.values())} events of {len(history)} users")
    fitted = recommender.fitted(name, history, **{**(params or {}), "seed": seed})
    params = {**fitted.params, **held_out}
    version, _ = registry.save(
        workspace,
        name,
        fitted.write,
        files=cls.files,
        base_model=workspace.settings.model,
        params=params,
        metrics={"grid": params.get("grid")},
    )
    return {
        "strategy": name,
        "version": version,
        "params": {k: v for k, v in params.items() if k != "grid"},
        "grid": params.get("grid"),
        "seconds": round(time.perf_counter() - started, 1),
    }
