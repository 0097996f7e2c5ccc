"""The trainer's machine-readable event stream: one JSON object per stdout line.

Another program (the tuner's runner, a shell pipe to ``jq``) can follow a run from
these lines alone; everything else the trainer says goes to stderr and
``RUN_DIR/train.log``. Every event has ``event`` (its kind) and ``time`` (Unix
seconds). The kinds and their fields:

``start``
    ``run_dir``, ``device``, ``pid``, ``hparams`` (the full, validated set),
    ``n_train``, ``n_val`` (utterances), ``epoch``, ``step`` (where training starts:
    0, or the resumed position), ``resumed_from`` (checkpoint path or null),
    ``threads`` (torch's CPU threads; ``OMP_NUM_THREADS`` sets them).
``validation``
    ``epoch`` (1-based, the epoch being trained), ``step`` (optimizer steps so far),
    ``train_loss`` (mean over the steps since the previous validation),
    ``val_loss``, ``val_mel_loss``, ``val_gate_loss`` (``train_loss`` and ``val_loss``
    are mel + gate, without the guided-attention term, which is
    ``val_guided_attention_loss``), ``grad_norm`` (mean pre-clipping norm since the
    previous validation), ``lr``, ``alignment_score`` and its components
    ``attention_focus``, ``attention_progress``, ``attention_coverage`` (see
    :mod:`train.tacotron2.alignment`), ``stop_rate`` and ``length_ratio`` (null when no
    utterance is decoded free-running; see :mod:`train.tacotron2.free_running`),
    ``seconds`` (training compute time of this run so far, validation included,
    excluding start-up) and ``epoch_end`` (whether this validation closes an epoch).
``checkpoint``
    ``epoch``, ``step``, ``path``, ``kind`` (``last`` or ``best``), ``is_best``,
    ``val_loss``.
``artifact``
    ``epoch``, ``step``, ``kind`` (``alignment_plot``, ``mel_plot`` or ``audio``; and
    ``listening`` from ``python -m train.evaluate --json``: its summary, a JSON file),
    ``path``.
``end``
    ``status`` (``done``, ``stopped`` or ``diverged``), ``epoch``, ``step``,
    ``best_val_loss``, ``best_checkpoint``, ``last_checkpoint``, ``reason`` (text),
    ``seconds``.

Exit codes: 0 for ``done`` and ``stopped``, :data:`EXIT_DIVERGED` for ``diverged`` (a
NaN/inf loss, or one past ``max_loss_growth`` times the first step's), 2 for bad arguments
or hyperparameters, 1 for any other error (no ``end`` event; the last line on stderr is
``error: MESSAGE``, naming the file for a file that could not be read or written).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Any, TextIO

EXIT_DIVERGED = 3
LOG_FILE = "train.log"  # in the run folder: everything the trainer says on stderr

EVENT_KINDS = ("start", "validation", "checkpoint", "artifact", "end")


def _jsonable(value: Any) -> Any:
    # NaN/inf are not JSON; a diverged loss is reported as null.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def emit(kind: str, /, stream: TextIO | None = None, **fields: Any) -> dict[str, Any]:
    """Write one event line and flush it, so a follower sees it at once."""
    if kind not in EVENT_KINDS:
        raise ValueError(f"unknown event kind {kind!r}")
    event = {"event": kind, "time": time.time(), **{k: _jsonable(v) for k, v in fields.items()}}
    out = stream or sys.stdout
    try:
        out.write(json.dumps(event) + "\n")
        out.flush()
    except BrokenPipeError:
        # The follower is gone (e.g. the tuner was killed): keep going, so the run can
        # still save its checkpoint and end cleanly, and write further events nowhere.
        os.dup2(os.open(os.devnull, os.O_WRONLY), out.fileno())
    return event


def parse(line: str) -> dict[str, Any] | None:
    """The event on ``line``, or None when the line is not an event."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) and event.get("event") in EVENT_KINDS else None
