"""The one early-stopping loop every trainer runs: epochs while the validation figure improves.

The two-tower, the label fine-tune and the interactions fine-tune differ in what an epoch is and
what they measure; when to stop, and which weights to keep, is the same rule for all of them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Epochs:
    """What ``run_epochs`` did.

    Attributes:
        rows: One row per epoch run: epoch, loss, the figure (under its name), seconds.
        best_epoch: The epoch whose weights were kept (0: none beat the starting point).
        best: Its figure.
    """

    rows: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best: float = float("-inf")


def run_epochs(
    epoch: Callable[[], float],
    measure: Callable[[], float],
    *,
    epochs: int,
    patience: int,
    metric: str,
    snapshot: Callable[[], object],
    restore: Callable[[object], None],
    initial: float | None = None,
    say: Callable[[str], None] = print,
) -> Epochs:
    """Run up to ``epochs`` epochs, measure after each, and keep the best one's weights.

    Args:
        epoch: Trains one epoch; returns its loss.
        measure: The validation figure, higher is better; NaN when there is nothing to measure,
            which counts as an improvement (the last epoch is kept).
        epochs: At most this many.
        patience: Stop after this many epochs without improvement.
        metric: The figure's name in the rows and the log.
        snapshot: The model's weights now; ``restore`` puts such a copy back.
        restore: See ``snapshot``.
        initial: The figure before training (its weights are kept unless an epoch beats it);
            None: the first epoch is kept whatever it measures.
        say: Where progress lines go.
    """
    done = Epochs(best=float("-inf") if initial is None else initial)
    kept = None if initial is None else snapshot()
    for n in range(1, epochs + 1):
        started = time.perf_counter()
        loss = epoch()
        figure = measure()
        seconds = time.perf_counter() - started
        done.rows.append(
            {"epoch": n, "loss": round(loss, 4), metric: round(figure, 4), "seconds": round(seconds, 1)}
        )
        say(f"epoch {n}/{epochs}: loss {loss:.4f}, {metric} {figure:.4f} ({seconds:.1f} s)")
        if math.isnan(figure) or figure > done.best:
            done.best, done.best_epoch, kept = figure, n, snapshot()
        elif n - done.best_epoch >= patience:
            say(f"early stop: no improvement for {patience} epochs (best epoch {done.best_epoch})")
            break
    if kept is not None:
        restore(kept)
    return done
