"""Retention of checkpoints: what a failed trial keeps, and attributes that stay true."""

from pathlib import Path

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from tests.test_tuner import write_config
from tuner_core.config import load_config
from tuner_core.study import create_study, load_study
from tuner_core.study.retention import enforce_retention


def finished_trial(study: optuna.Study, run_dir: Path, state: TrialState,
                   value: float | None = None) -> None:
    """A finished trial whose run folder holds the trainer's three checkpoints."""
    run_dir.mkdir(parents=True)
    for name in ("last.pt", "last.prev.pt", "best.pt"):
        (run_dir / name).write_bytes(b"checkpoint")
    study.add_trial(optuna.create_trial(
        state=state, value=value, params={"learning_rate": 1e-3},
        distributions={"learning_rate": FloatDistribution(1e-4, 1e-2, log=True)},
        user_attrs={"run_dir": str(run_dir), "best_checkpoint": str(run_dir / "best.pt")}))


def test_a_failed_trial_keeps_its_last_and_best_checkpoints_and_no_attribute_points_at_nothing(
        tmp_path, corpus, mel_cache):
    config = load_config(write_config(tmp_path, corpus, mel_cache, registry={"keep_top_k": 1}))
    study = create_study(config, "kept", 3)
    finished_trial(study, tmp_path / "best", TrialState.COMPLETE, 1.0)
    finished_trial(study, tmp_path / "worse", TrialState.COMPLETE, 2.0)
    finished_trial(study, tmp_path / "disk_full", TrialState.FAIL)

    deleted = enforce_retention(config, study)

    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == [
        "best.pt", "last.prev.pt", "last.pt"]
    assert list((tmp_path / "worse").iterdir()) == []
    # The failed trial may be resumed by hand from its last checkpoint, and its best
    # model (a trainer may crash late, on a full disk say) is kept.
    assert sorted(p.name for p in (tmp_path / "disk_full").iterdir()) == [
        "best.pt", "last.prev.pt", "last.pt"]
    assert set(deleted) == {tmp_path / "worse" / name
                            for name in ("last.pt", "last.prev.pt", "best.pt")}
    best, worse, failed = load_study(config, "kept").trials  # as another process reads them
    assert best.user_attrs["best_checkpoint"] == str(tmp_path / "best" / "best.pt")
    assert worse.user_attrs["best_checkpoint"] is None
    assert failed.user_attrs["best_checkpoint"] == str(tmp_path / "disk_full" / "best.pt")
