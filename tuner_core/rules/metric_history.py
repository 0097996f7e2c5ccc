"""Anomaly detection in a trial's metric series.

The runner gathers every validation's numbers as ``{metric: [one value per validation]}``,
with ``epoch`` among the metrics (see :data:`tuner_core.storage.attributes.VALIDATION_METRICS`),
and checks each new validation as it arrives. Anomalies are sudden upward spikes (a loss or
gradient norm far above its recent values) and non-finite values; the runner keeps what it
finds on the trial as the user attribute ``anomalies``, where the bot and the reports read
them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# MAD × 1.4826 estimates the standard deviation of normally distributed values.
MAD_TO_STD = 1.4826
# The spread is never taken below this fraction of the level, so a nearly flat series
# (a converged loss) does not turn its tiny wiggles into "spikes".
MIN_RELATIVE_SPREAD = 0.01

ANOMALY_METRICS = ("train_loss", "val_loss", "grad_norm")


def _finite(value: Any) -> bool:
    return value is not None and math.isfinite(value)


@dataclass(frozen=True)
class Anomaly:
    """One suspicious value; ``value`` and ``zscore`` are None for a non-finite value."""

    metric: str
    epoch: int
    value: float | None
    zscore: float | None
    message: str


def _spread(values: Sequence[float], level: float) -> float:
    """The scale a new value is judged on: the MAD or the standard deviation, floored.

    From a few values the MAD alone often comes out small by chance: on Gaussian
    noise, with 16 values and z > 5, it flags 1 value in 750; the larger of the MAD
    and the standard deviation flags 1 in 14 000.
    """
    mad = statistics.median(abs(v - level) for v in values) * MAD_TO_STD
    return max(mad, statistics.stdev(values), MIN_RELATIVE_SPREAD * abs(level))


def detect_anomalies(history: Mapping[str, Sequence[Any]],
                     metrics: Sequence[str] = ANOMALY_METRICS, window: int = 16,
                     z_threshold: float = 5.0, min_history: int = 5,
                     since: int = 0) -> list[Anomaly]:
    """Spikes and non-finite values of ``metrics`` in ``history``, in validation order.

    A value spikes when its z-score against the ``window`` finite values just before
    it (their median; the largest of MAD × 1.4826, their standard deviation and 1 %
    of the median) is above ``z_threshold``. Only upward jumps count: for these
    metrics a fall is progress. A value with fewer than ``min_history`` (at least 2)
    finite values before it is not judged, nor is one whose window has no spread at
    all. NaN, inf and None are anomalies: the trainer reports a non-finite number as
    null (JSON has no NaN). Only validations from index ``since`` on are checked, so
    the runner passes the newest index to check just that one.
    """
    if min_history < 2:
        raise ValueError(f"min_history={min_history}: a spread needs at least 2 values")
    epochs = history.get("epoch", [])
    found: list[tuple[int, Anomaly]] = []
    for metric in metrics:
        values = history.get(metric, [])
        for index in range(since, len(values)):
            value, epoch = values[index], epochs[index]
            if not _finite(value):
                found.append((index, Anomaly(metric, epoch, None, None,
                                             f"{metric} became NaN or inf at epoch {epoch}")))
                continue
            before = [v for v in values[:index] if _finite(v)][-window:]
            if len(before) < min_history:
                continue
            level = statistics.median(before)
            spread = _spread(before, level)
            if spread == 0:
                continue
            zscore = (value - level) / spread
            if zscore > z_threshold:
                found.append((index, Anomaly(
                    metric, epoch, value, zscore,
                    f"{metric} spiked to {value:.4g} at epoch {epoch} (z={zscore:.1f} "
                    f"against the previous {len(before)} validations)")))
    return [anomaly for _, anomaly in sorted(found, key=lambda item: item[0])]
