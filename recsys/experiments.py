"""A/B experiments: ``auto`` traffic split between strategies, and what each arm's users clicked.

A user's arm is a pure function of the experiment's name and the user key (a SHA-256 bucket), so it
never changes while the experiment runs and needs no table of assignments. One experiment runs at
a time. Stopping one keeps every impression and click: its report still answers.

CTR is clicks per impression, where a click is an impression whose list (``request_id``) and item
the same user then acted on. Intervals are Wilson's (per arm) and Newcombe's (a difference); the
p-value is the pooled two-proportion z-test, all from statsmodels.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, func, or_, select

from recsys import registry, store, strategies
from recsys.errors import NotFound, RecsysError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Experiment:
    """One experiment.

    Attributes:
        name: Its unique name (also the assignment salt).
        strategies: The arms, in order; the first is the control of the comparison.
        split: Each arm's share, in percent (sums to 100).
        started_at: When it started.
        stopped_at: When it stopped; None while it runs.
    """

    name: str
    strategies: tuple[str, ...]
    split: tuple[float, ...]
    started_at: datetime
    stopped_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self.stopped_at is None

    def arm(self, user: str) -> str:
        """The user's arm: the same for the same (experiment, user), whoever asks, whenever."""
        digest = hashlib.sha256(f"{self.name}\x00{user}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64 * 100.0
        edge = 0.0
        for name, share in zip(self.strategies, self.split, strict=True):
            edge += share
            if point < edge:
                return name
        return self.strategies[-1]

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "strategies": list(self.strategies),
            "split": list(self.split),
            "started_at": self.started_at.isoformat(),
            "stopped_at": self.stopped_at.isoformat() if self.stopped_at else None,
            "running": self.running,
        }


def _from_row(row: store.Experiment) -> Experiment:
    return Experiment(
        row.name,
        tuple(row.strategies),
        tuple(float(s) for s in row.split),
        store.as_utc(row.started_at),
        store.as_utc(row.stopped_at) if row.stopped_at else None,
    )


def parse_split(text: str | None, arms: int) -> tuple[float, ...]:
    """ "50,50" -> (50.0, 50.0); None splits evenly. Shares must be positive and sum to 100."""
    if text is None:
        return tuple(100.0 / arms for _ in range(arms))
    try:
        shares = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise RecsysError(f"--split {text!r}: expected numbers like 50,50") from None
    if len(shares) != arms:
        raise RecsysError(f"--split {text!r} has {len(shares)} shares for {arms} strategies")
    if any(not 0 < s < 100 for s in shares) or abs(sum(shares) - 100.0) > 1e-6:
        raise RecsysError(f"--split {text!r}: each share between 0 and 100, summing to 100")
    return shares


def start(workspace, name: str, arms: list[str], split: tuple[float, ...] | None = None) -> Experiment:
    """Start an experiment; refuses a second running one, a reused name, or an unknown strategy."""
    if not NAME.fullmatch(name or ""):
        raise RecsysError(f"experiment name {name!r}: 1 to 64 letters, digits, '.', '-' or '_'")
    if len(arms) < 2 or len(set(arms)) != len(arms):
        raise RecsysError("an experiment needs at least two different strategies, e.g. popular,average")
    for arm in arms:
        if arm == "auto":
            raise RecsysError("an arm must be a strategy, not auto (auto serves the experiment's arms)")
        cls = strategies.get(arm)  # one line naming an unknown strategy
        if cls.needs_model and registry.latest(workspace, arm) is None:
            raise RecsysError(
                f"strategy {arm!r} has no trained model yet: `recsys train --strategy {arm}` first"
            )
    split = split or parse_split(None, len(arms))
    with workspace.session() as s, s.begin():
        if s.scalar(select(store.Experiment.id).where(store.Experiment.name == name)) is not None:
            raise RecsysError(f"experiment {name!r} already exists: pick another name")
        other = s.scalar(select(store.Experiment.name).where(store.Experiment.stopped_at.is_(None)))
        if other is not None:
            raise RecsysError(f"experiment {other!r} is running: `recsys experiment stop {other}` first")
        row = store.Experiment(name=name, strategies=list(arms), split=list(split), started_at=store.utcnow())
        s.add(row)
        s.flush()
        return _from_row(row)


def stop(workspace, name: str) -> Experiment:
    """Stop serving the experiment's arms; its impressions and clicks stay."""
    with workspace.session() as s, s.begin():
        row = s.scalar(select(store.Experiment).where(store.Experiment.name == name))
        if row is None:
            raise NotFound(f"unknown experiment {name!r}")
        if row.stopped_at is None:
            row.stopped_at = store.utcnow()
        return _from_row(row)


def get(workspace, name: str) -> Experiment:
    with workspace.session() as s:
        row = s.scalar(select(store.Experiment).where(store.Experiment.name == name))
        if row is None:
            raise NotFound(f"unknown experiment {name!r}")
        return _from_row(row)


def running(workspace) -> Experiment | None:
    with workspace.session() as s:
        row = s.scalar(select(store.Experiment).where(store.Experiment.stopped_at.is_(None)))
        return _from_row(row) if row is not None else None


def all_experiments(workspace) -> list[Experiment]:
    """Every experiment, newest first."""
    with workspace.session() as s:
        return [
            _from_row(r) for r in s.scalars(select(store.Experiment).order_by(store.Experiment.id.desc()))
        ]


# -- the report -------------------------------------------------------------------------------


def arm_counts(workspace, name: str) -> dict[str, dict[str, int]]:
    """{arm: {"users", "impressions", "clicks"}} from the impressions the experiment logged.

    An impression is a (person, item) the arm showed, however often; a click, such a pair the person
    then acted on from one of those lists. Showing someone the same items again and again, or
    clicking one again and again, moves nothing."""
    imp, inter, users = store.Impression, store.Interaction, store.User
    pairs = select(imp.arm, imp.user_key, imp.item_id).where(imp.experiment == name).distinct().subquery()
    shown = select(pairs.c.arm, func.count(func.distinct(pairs.c.user_key)), func.count()).group_by(
        pairs.c.arm
    )
    clicked_pairs = (  # impressions whose list and item the same user then acted on (indexed join)
        select(imp.arm, imp.user_key, imp.item_id)
        .join(inter, and_(inter.request_id == imp.request_id, inter.item_id == imp.item_id))
        .join(users, users.id == inter.user_id)
        .where(imp.experiment == name, or_(imp.user_key.is_(None), users.key == imp.user_key))
        .distinct()
        .subquery()
    )
    clicked = select(clicked_pairs.c.arm, func.count()).group_by(clicked_pairs.c.arm)
    with workspace.engine.connect() as conn:
        counts = {arm: {"users": u, "impressions": n, "clicks": 0} for arm, u, n in conn.execute(shown)}
        for arm, clicks in conn.execute(clicked):
            counts[arm]["clicks"] = clicks
    return counts


def ctr_interval(clicks: int, impressions: int) -> tuple[float, float]:
    """Wilson's 95% interval of a click-through rate ((0, 1) with no impressions)."""
    from statsmodels.stats.proportion import proportion_confint

    if impressions == 0:
        return (0.0, 1.0)
    low, high = proportion_confint(clicks, impressions, alpha=0.05, method="wilson")
    return (float(low), float(high))


def compare(treatment: tuple[int, int], control: tuple[int, int]) -> dict:
    """Treatment CTR minus control CTR, each given as (clicks, impressions)."""
    from statsmodels.stats.proportion import confint_proportions_2indep, proportions_ztest

    (c1, n1), (c0, n0) = treatment, control
    if n1 == 0 or n0 == 0:
        return {"difference": None, "ci": None, "p_value": None}
    diff = c1 / n1 - c0 / n0
    low, high = confint_proportions_2indep(c1, n1, c0, n0, method="newcomb", compare="diff")
    if c1 + c0 in (0, n1 + n0):  # both arms all-or-nothing: no variance, no test
        p_value = 1.0
    else:
        p_value = float(proportions_ztest([c1, c0], [n1, n0])[1])
    return {"difference": diff, "ci": [float(low), float(high)], "p_value": p_value}


def report(workspace, name: str) -> dict:
    """Per arm: users, impressions, clicks, CTR and its interval; each arm against the first."""
    experiment = get(workspace, name)
    counts = arm_counts(workspace, name)
    arms = []
    for strategy in experiment.strategies:
        c = counts.get(strategy, {"users": 0, "impressions": 0, "clicks": 0})
        ctr = c["clicks"] / c["impressions"] if c["impressions"] else None
        interval = list(ctr_interval(c["clicks"], c["impressions"]))
        arms.append({"strategy": strategy, **c, "ctr": ctr, "ctr_ci": interval})
    control = arms[0]
    versus = [
        {
            "strategy": arm["strategy"],
            **compare((arm["clicks"], arm["impressions"]), (control["clicks"], control["impressions"])),
        }
        for arm in arms[1:]
    ]
    return {
        "experiment": experiment.as_dict(),
        "arms": arms,
        "comparison": {
            "control": control["strategy"],
            "method": "difference in CTR (treatment - control): Newcombe 95% interval, pooled z-test",
            "treatments": versus,
        },
    }


def format_report(result: dict) -> str:
    """The report as a few readable lines (the CLI's and the dashboard's text)."""

    def pct(value) -> str:
        return "-" if value is None else f"{100 * value:.2f}%"

    lines = [
        f"experiment {result['experiment']['name']} "
        f"({'running' if result['experiment']['running'] else 'stopped'})",
        f"{'arm':<14}{'users':>8}{'impressions':>13}{'clicks':>9}{'CTR':>9}  95% interval",
    ]
    for arm in result["arms"]:
        low, high = arm["ctr_ci"]
        lines.append(
            f"{arm['strategy']:<14}{arm['users']:>8}{arm['impressions']:>13}{arm['clicks']:>9}"
            f"{pct(arm['ctr']):>9}  [{pct(low)}, {pct(high)}]"
        )
    comparison = result["comparison"]
    for row in comparison["treatments"]:
        if row["difference"] is None:
            lines.append(f"{row['strategy']} - {comparison['control']}: no impressions yet")
            continue
        low, high = row["ci"]
        lines.append(
            f"{row['strategy']} - {comparison['control']}: {100 * row['difference']:+.2f} points "
            f"[{100 * low:+.2f}, {100 * high:+.2f}], p = {row['p_value']:.2g}"
        )
    return "\n".join(lines)
