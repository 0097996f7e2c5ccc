"""The fleet in the chat's words: the lines /status adds and the /workers list.

HTML parse mode, as every text in :mod:`bot.messages`; host, device and study names are
escaped.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping
from typing import Any

from bot.clock import duration


def fleet_lines(workers: list[Mapping[str, Any]]) -> list[str]:
    """The fleet in /status: each device at work and on what, the idle ones (standing by,
    for a standing worker), and the workers lost."""
    lines = []
    for worker in workers:
        host = html.escape(worker["host"])
        if worker["lost"]:
            lines.append(f"⚠️ {host} (pid {worker['pid']}): lost, last heartbeat "
                         f"{duration(time.time() - worker['last_seen'])} ago")
            continue
        busy = {trial["device"] for trial in worker["trials"]}
        lines += [f"🖥 {host} {html.escape(trial['device'])}: trial {trial['number']} of "
                  f"<code>{html.escape(trial['study'])}</code>" for trial in worker["trials"]]
        if idle := [device for device in worker["devices"] if device not in busy]:
            lines.append(f"💤 {host} {html.escape(', '.join(idle))}: "
                         + ("standing by" if worker["following"] else "idle"))
    return ["<b>Fleet</b>", *lines] if lines else []


def workers_text(workers: list[Mapping[str, Any]]) -> str:
    """/workers: each worker's host, pid, kind, last heartbeat, and each device's trial."""
    if not workers:
        return ("No worker is working on the studies. Start one that serves every study "
                "with <code>python -m tuner_core worker --follow</code> on a machine that "
                "reaches the storage.")
    lines = [f"👷 <b>Workers</b> ({len(workers)})"]
    for worker in workers:
        kind = "standing" if worker["following"] else "study worker"
        state = "lost" if worker["lost"] else "idle" if worker["idle"] else "working"
        lines.append(f"<b>{html.escape(worker['host'])}</b> pid {worker['pid']} · {kind} · "
                     f"{state} · heartbeat {duration(time.time() - worker['last_seen'])} ago")
        trials = {trial["device"]: trial for trial in worker["trials"]}
        for device in worker["devices"]:
            trial = trials.get(device)
            lines.append(f"  {html.escape(device)}: " + (
                f"trial {trial['number']} of <code>{html.escape(trial['study'])}</code>"
                if trial else "idle"))
    return "\n".join(lines)
