"""Shared by the benchmarks: run a study of the demo profile in a throwaway state folder."""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.corpus import generate_corpus  # noqa: E402
from tuner_core.config import load_config  # noqa: E402
from tuner_core.study import create_study, run_worker  # noqa: E402
from tuner_core.trial.listener import TrialListener  # noqa: E402

DEMO_CORPUS = ROOT / ".state" / "demo_corpus"


def demo_corpus() -> Path:
    """The demo corpus of ``make demo``, generated if it is not there yet."""
    if not (DEMO_CORPUS / "metadata.csv").exists():
        generate_corpus(DEMO_CORPUS, n=100, seed=0)
    return DEMO_CORPUS


def run_demo_study(name: str, n_trials: int, listener: TrialListener | None = None,
                   **changes: Any):
    """A finished study of config/demo.yaml with top-level ``changes``, its trials heard by
    ``listener``; (trials, seconds)."""
    settings = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    settings.update(changes)
    settings["dataset_path"] = str(demo_corpus())
    with tempfile.TemporaryDirectory() as tmp:
        settings["state_dir"] = tmp
        path = Path(tmp) / "config.yaml"
        path.write_text(yaml.safe_dump(settings))
        config = load_config(path)
        study = create_study(config, name, n_trials)
        started = time.perf_counter()
        run_worker(config, study, listener)
        elapsed = time.perf_counter() - started
        # Read everything while the storage still exists.
        return study.get_trials(), elapsed
