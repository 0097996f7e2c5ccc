"""A stand-in interpreter that paces a trainer: trials that replay a recorded run
(``trainer.replay``) last seconds, as real ones last hours, instead of a fraction of a
second, so that a fleet's trials overlap and its storage calls spread out as real ones do.
Used as ``trainer.python`` by the fleet's tests and bench/storage_load.py."""

from __future__ import annotations

import sys
from pathlib import Path

# Runs python with its arguments and passes the trainer's stdout on, each validation
# event ``delay`` seconds late; SIGTERM ends it as it ends a trainer.
PACED_PYTHON = """#!{python}
import signal, subprocess, sys, time
child = subprocess.Popen([{python!r}, *sys.argv[1:]], stdout=subprocess.PIPE, text=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(child.terminate() or 0))
for line in child.stdout:
    if '"validation"' in line:
        time.sleep({delay})
    sys.stdout.write(line)
    sys.stdout.flush()
sys.exit(child.wait())
"""


def paced_python(folder: Path, delay_s: float) -> Path:
    """Write the stand-in interpreter into ``folder``, each epoch ``delay_s`` long; its path."""
    path = folder / "paced_python"
    path.write_text(PACED_PYTHON.format(python=sys.executable, delay=delay_s))
    path.chmod(0o755)
    return path
