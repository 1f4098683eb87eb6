"""Pictures of the workspace's numbers (matplotlib, no display): PNG bytes, or a file."""

from __future__ import annotations

import io
from collections.abc import Sequence
from datetime import date


def _figure(width: float = 7.0, height: float = 3.6):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt, *plt.subplots(figsize=(width, height))


def _png(plt, fig) -> bytes:
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def events_per_day(days: Sequence[tuple[date, int]]) -> bytes:
    """Events per day as bars (an empty log draws an empty, labelled chart)."""
    plt, fig, ax = _figure()
    if days:
        ax.bar([d for d, _ in days], [n for _, n in days], width=1.0, color="#3b6ea5")
        fig.autofmt_xdate()
    else:
        ax.text(0.5, 0.5, "no events yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("events")
    ax.set_title("events per day")
    ax.grid(axis="y", alpha=0.3)
    return _png(plt, fig)


def recall_at_k(metrics: Sequence[dict], title: str) -> bytes:
    """recall@K per strategy with its 95% band, from an evaluation's metric rows."""
    plt, fig, ax = _figure(7.0, 4.5)
    by_strategy: dict[str, list[dict]] = {}
    for row in metrics:
        by_strategy.setdefault(row["strategy"], []).append(row)
    for name, rows in by_strategy.items():
        rows = sorted(rows, key=lambda r: r["k"])
        ks = [r["k"] for r in rows]
        ax.plot(ks, [r["recall"] for r in rows], marker="o", label=name)
        if all("recall_ci_low" in r for r in rows):
            ax.fill_between(
                ks, [r["recall_ci_low"] for r in rows], [r["recall_ci_high"] for r in rows], alpha=0.2
            )
    if by_strategy:
        ks = sorted({row["k"] for row in metrics})
        ax.set_xscale("log")
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no evaluation yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("K")
    ax.set_ylabel("recall@K")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _png(plt, fig)


def experiment_ctr(reports: Sequence[dict]) -> bytes:
    """CTR per arm with its 95% interval, one group of bars per experiment."""
    plt, fig, ax = _figure(7.0, 3.6)
    labels, values, low, high = [], [], [], []
    for report in reports:
        for arm in report["arms"]:
            labels.append(f"{report['experiment']['name']}\n{arm['strategy']}")
            ctr = arm["ctr"] or 0.0
            values.append(100 * ctr)
            low.append(100 * (ctr - arm["ctr_ci"][0]))
            high.append(100 * (arm["ctr_ci"][1] - ctr))
    if labels:
        ax.bar(range(len(labels)), values, yerr=[low, high], capsize=6, color="#5a9e6f")
        ax.set_xticks(range(len(labels)), labels)
    else:
        ax.text(0.5, 0.5, "no experiments yet", ha="center", va="center", transform=ax.transAxes)
    ax.set_ylabel("CTR (%)")
    ax.set_title("click-through rate per arm (95% Wilson interval)")
    ax.grid(axis="y", alpha=0.3)
    return _png(plt, fig)
