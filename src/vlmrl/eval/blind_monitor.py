"""Training-time blind-gap monitor: warn when the model starts answering from the text alone.

Every training evaluation with ``eval.blind: true`` measures ``eval/blind_gap`` (real-image
accuracy minus the best blind condition's, :mod:`vlmrl.eval.blind`). When RL learns a language
prior (a question wording that predicts the answer), blind accuracy rises toward real accuracy
and the gap falls, even while the training reward and the in-distribution accuracy look healthy.
The monitor compares each gap with the first one of the run:

- ``eval/blind_gap_drop = gap_first − gap_now`` (positive: the image explains less than it did);
- ``eval/blind_gap_alert``: 1.0 while the drop exceeds ``eval.blind_gap_drop`` (a warning is
  logged once, the first time it fires), else 0.0.

A resumed run starts a new reference at its first evaluation. Like the drift alert
(:mod:`vlmrl.eval.drift`), it only reports; nothing in training changes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

GAP_KEY = "eval/blind_gap"


def gap_dropped(first: float, now: float, threshold: float) -> bool:
    """Whether the blind gap fell by more than ``threshold`` since ``first``.

    >>> gap_dropped(0.40, 0.15, 0.2), gap_dropped(0.40, 0.25, 0.2), gap_dropped(0.1, 0.4, 0.2)
    (True, False, False)
    """
    return first - now > threshold


@dataclass
class BlindGapMonitor:
    """Holds the run's first blind gap and whether the alert has fired (see the module docstring)."""

    threshold: float
    """``eval.blind_gap_drop``: the fall of the gap (in accuracy points, 0–1) that raises the alert."""
    first: float | None = None
    fired: bool = False

    def observe(self, metrics: dict[str, float]) -> dict[str, float]:
        """The monitor's metrics for one evaluation's ``metrics`` (``{}`` without ``eval/blind_gap``)."""
        if GAP_KEY not in metrics:
            return {}
        gap = float(metrics[GAP_KEY])
        if self.first is None:
            self.first = gap
        alert = gap_dropped(self.first, gap, self.threshold)
        if alert and not self.fired:
            blind = max((v for k, v in metrics.items() if k.startswith("eval/blind/")), default=float("nan"))
            log.warning(
                "blind gap fell from %.3f to %.3f (best blind accuracy %.3f): the model answers more "
                "from the question text and less from the image (eval.blind_gap_drop = %.3f)",
                self.first,
                gap,
                blind,
                self.threshold,
            )
            self.fired = True
        return {"eval/blind_gap_drop": self.first - gap, "eval/blind_gap_alert": float(alert)}
