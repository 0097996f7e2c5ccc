"""bench/replay_pruning.py's ideal pruner, through the real tuner on the replayed demo
table: it stops at their first epoch exactly the trials whose runs would not become the
study's pick, so what it reaches is how far any pruner could get."""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from bench.replay_pruning import (
    TABLE,
    Truth,
    picked,
    run_study,
    study_settings,
    with_foresight,
)
from train.replay import load_table

ROOT = Path(__file__).resolve().parents[1]


def test_the_foresight_pruner_lets_only_the_next_pick_train(tmp_path):
    demo = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    table = load_table(TABLE)
    truth = Truth.of(table, demo)
    settings = study_settings(demo, TABLE, tmp_path, pair=3, pruned=True, confirm=None)
    settings["dataset_path"] = str(tmp_path)  # a replay reads no data
    pruner = with_foresight(settings, table, demo)
    epochs = demo["trainer"]["hparams"]["epochs"]

    trials = run_study(settings, budget_epochs=3 * epochs, pruner=pruner)

    assert settings["early_stopping"] == {}  # the ideal replaces the criteria too
    best = math.inf
    for trial in trials:
        value, aligns = pruner.ending(trial["params"])
        if trial["state"] == "COMPLETE":  # each one that trained in full is the new pick
            assert picked(trial, truth) and trial["value"] == value < best
            assert trial["epochs"] == epochs
            best = value
        else:  # each one stopped would not have been
            assert trial["state"] == "PRUNED" and trial["epochs"] == 1
            assert not aligns or value >= best
    states = [trial["state"] for trial in trials]
    assert "PRUNED" in states and states.count("COMPLETE") >= 2, states
