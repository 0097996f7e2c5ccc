"""Deadlines of tests that wait on wall-clock time, scaled by one factor.

Every such deadline is written for a quiet 2-core machine, with room to spare, and
passed through :func:`scaled`. The factor is ``SMART_TUNER_TEST_TIME_SCALE`` (default
1), raised automatically to the machine's load per core when that is higher, so a
loaded machine makes the tests slower but does not fail them.
"""

import os

SCALE_VARIABLE = "SMART_TUNER_TEST_TIME_SCALE"


def time_scale() -> float:
    """The factor now: the variable's, or the load per core if that is higher."""
    try:
        configured = float(os.environ.get(SCALE_VARIABLE, "1"))
    except ValueError:
        raise ValueError(f"{SCALE_VARIABLE} must be a number, "
                         f"not {os.environ[SCALE_VARIABLE]!r}") from None
    load_per_core = os.getloadavg()[0] / (os.cpu_count() or 1)
    return max(1.0, configured, load_per_core)


def scaled(seconds: float) -> float:
    """``seconds`` times :func:`time_scale`."""
    return seconds * time_scale()
