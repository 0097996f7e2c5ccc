"""How the bot words spans of time."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """``42s``, ``4m 12s``, ``3h 05m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"
