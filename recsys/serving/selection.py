"""Which strategy serves: a named one, ``auto`` (the evaluated best), or a running experiment's arm.

Fitted strategies are kept for a while (``SERVING_TTL``) and so is the running experiment
(``EXPERIMENT_TTL``): serving asks the registry and the database again every so often, not on every
request, so a new model version or a stopped experiment takes effect within those seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from recsys import experiments, registry, strategies
from recsys.strategies import Context, Strategy

#: What a caller may ask for: every registered strategy, and "auto" (the evaluated best).
STRATEGIES = ("auto", *strategies.REGISTRY)
#: Seconds a served strategy (and the auto choice) is reused before the registry is asked again.
SERVING_TTL = 30.0
#: Seconds the running experiment is reused before the database is asked again.
EXPERIMENT_TTL = 5.0


@dataclass(frozen=True)
class Choice:
    """What serves one list, and why.

    Attributes:
        served: The fitted strategy.
        experiment: The running experiment the user is in (``auto`` only), else None.
        arm: The arm it assigned, else None.
        note: Why this strategy ("auto serves ..."), for the list's notes; None when asked by name.
    """

    served: Strategy
    experiment: experiments.Experiment | None = None
    arm: str | None = None
    note: str | None = None


class Selection:
    """The strategies one ``Recommender`` serves.

    Args:
        workspace: Where the registry, the evaluations and the experiments are.
        context: Builds what a strategy works with (the catalogue, the image space).
    """

    def __init__(self, workspace, context: Callable[[], Context]) -> None:
        self.workspace = workspace
        self.context = context
        self._serving: dict[tuple[str, int | None], tuple[float, Strategy]] = {}
        self._auto: tuple[float, dict] | None = None
        self._experiment: tuple[float, experiments.Experiment | None] | None = None

    def available(self) -> list[str]:
        """What this workspace can serve now: "auto", then every strategy whose model exists."""
        names = ["auto"]
        for name, cls in strategies.REGISTRY.items():
            if not cls.needs_model or registry.latest(self.workspace, name) is not None:
                names.append(name)
        return names

    def choose(
        self,
        name: str,
        user: str | None = None,
        version: int | None = None,
        half_life_days: float | None = None,
    ) -> Choice:
        """What serves ``user`` when ``name`` is asked for: ``auto`` is the user's arm while an
        experiment runs, else the evaluated best. ``half_life_days`` gives the average profile a
        half-life of its own."""
        experiment = self.experiment() if name == "auto" and user is not None else None
        arm = experiment.arm(user) if experiment is not None else None
        served = self.strategy(arm or name, version if arm is None else None)
        if half_life_days is not None and served.name == "average":
            served = strategies.get("average")(self.context(), {"half_life_days": half_life_days})
        note = None
        if arm is not None:
            note = f"auto serves {arm}: this user's arm of experiment {experiment.name}"
        elif name == "auto":
            note = describe(self.auto_choice())
        return Choice(served, experiment, arm, note)

    def strategy(self, name: str = "auto", version: int | None = None) -> Strategy:
        """The strategy ready to serve (``auto``: the evaluated best), reused for 30 s."""
        if name == "auto":  # the evaluated strategy, and the very version evaluated where it has one
            choice = self.auto_choice()
            name, version = choice["strategy"], choice.get("version")
        cls = strategies.get(name)
        key = (name, version)
        cached = self._serving.get(key)
        if cached is not None and time.monotonic() - cached[0] < SERVING_TTL:
            return cached[1]
        if cls.needs_model and version is None and cached is not None:
            latest = registry.latest(self.workspace, name)
            if latest is not None and latest.version == cached[1].params.get("version"):
                self._serving[key] = (time.monotonic(), cached[1])  # still the newest version
                return cached[1]
        params = {} if version is None else {"version": version}
        served = cls(self.context(), params).fit_serving()
        self._serving[key] = (time.monotonic(), served)
        return served

    def auto_choice(self) -> dict:
        """{"strategy", "version", "recall@10", "new_items", "score", "evaluation", "reason"}: what
        ``auto`` serves, and why.

        The strategy best by one figure that counts known and new items (``judge``), from the
        latest temporal evaluation and, where there is one, the latest cold-item evaluation; only
        strategies that can be served now count (one that needs a model has one; an evaluated
        version still exists). ``average`` when nothing was evaluated.
        """
        if self._auto is not None and time.monotonic() - self._auto[0] < SERVING_TTL:
            return self._auto[1]
        choice = {
            "strategy": "average",
            "recall@10": None,
            "new_items": None,
            "evaluation": None,
            "reason": "no evaluation yet",
        }
        warm = next(iter(registry.latest_evaluations(self.workspace, split="temporal")), None)
        cold = next(iter(registry.latest_evaluations(self.workspace, split="cold-items")), None)
        rows = [r for r in (warm.strategies if warm else []) if self._servable(r)]
        if rows:
            weight = self.workspace.settings.new_item_weight
            judged = judge(rows, cold.strategies if cold else None, weight)
            best = max(judged, key=lambda r: r["score"])
            if cold is not None:
                reason = (
                    f"best of evaluations {warm.id} (known items) and {cold.id} (new items) by "
                    f"{1 - weight:g} x recall@10 + {weight:g} x reach x new-item recall@10"
                )
            else:
                reason = f"best recall@10 in evaluation {warm.id} (no cold-item evaluation yet)"
            choice = {
                "strategy": best["strategy"],
                "version": best.get("version"),
                "recall@10": best["recall@10"],
                "new_items": best["new_items"],
                "score": best["score"],
                "evaluation": warm.id,
                "reason": reason,
            }
        self._auto = (time.monotonic(), choice)
        return choice

    def _servable(self, row: dict) -> bool:
        cls = strategies.REGISTRY.get(row["strategy"])
        if cls is None:
            return False
        if row.get("version") is not None and not registry.exists(self.workspace, cls.name, row["version"]):
            return False
        if not cls.needs_model:
            return True
        latest = registry.latest(self.workspace, cls.name)
        if latest is None:
            return False
        return not cls.bound_to_vectors or latest.base_model == self.workspace.settings.model

    def experiment(self) -> experiments.Experiment | None:
        """The running experiment, if any (asked again after 5 s: a stop takes effect that fast)."""
        if self._experiment is None or time.monotonic() - self._experiment[0] > EXPERIMENT_TTL:
            self._experiment = (time.monotonic(), experiments.running(self.workspace))
        return self._experiment[1]


def judge(warm: list[dict], cold: list[dict] | None, weight: float) -> list[dict]:
    """Each warm row with ``new_items`` ({"recall@10", "reach"} from the cold rows, None when there
    are none) and ``score``: (1 - ``weight``) x recall@10 + ``weight`` x reach x new-item recall@10.

    Reach is the share of new items the strategy put in anyone's list: 0 for one that ranks by
    interactions only, which would never show a new item. Without a cold evaluation the score is
    the warm recall@10."""
    by_name = {r["strategy"]: r for r in cold or []}
    out = []
    for row in warm:
        new = by_name.get(row["strategy"])
        figures = {"recall@10": new["recall@10"], "reach": new.get("reach", 0.0)} if new else None
        if cold is None:
            score = row["recall@10"]
        else:
            new_figure = figures["recall@10"] * figures["reach"] if figures else 0.0
            score = (1 - weight) * row["recall@10"] + weight * new_figure
        out.append({**row, "new_items": figures, "score": score})
    return out


def describe(choice: dict) -> str:
    """What auto serves and why, with its figures: the line the page and the API show."""
    note = f"auto serves {choice['strategy']}: {choice['reason']}"
    if choice.get("recall@10") is not None:
        note += f"; recall@10 {choice['recall@10']:.4f} on known items"
    new = choice.get("new_items")
    if new:
        note += f", {new['recall@10']:.4f} on new items (reaching {new['reach']:.0%} of them)"
    return note
