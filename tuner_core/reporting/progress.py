"""The command line's progress bars: trials of the study, epochs of the running trial."""

from __future__ import annotations

import threading
from pathlib import Path

from tqdm import tqdm

from tuner_core.trial.listener import TrialListener


class ProgressBars(TrialListener):
    """Two progress bars: trials of the study, epochs of the running trial.

    After a trial's last epoch (or its stop) the epoch bar says what is under way: the
    trainer's plots, audio and checkpoints, then the tracking and the registry. A ticker
    redraws both bars every second, so their clocks run while nothing else moves.
    """

    def __init__(self, n_trials: int, epochs: int):
        self.trials = tqdm(total=n_trials, desc="trials", unit="trial", position=0)
        self.epochs = tqdm(total=epochs, desc="epochs", unit="epoch", position=1, leave=False)
        self.best: float | None = None
        self._closed = threading.Event()
        threading.Thread(target=self._tick, name="progress-bars", daemon=True).start()

    def _tick(self) -> None:
        while not self._closed.wait(1.0):
            self.epochs.refresh()
            self.trials.refresh()

    def trial_started(self, trial, hparams, run_dir):
        self.epochs.reset(total=hparams["epochs"])
        self.epochs.set_description(f"trial {trial.number}")

    def trainer_event(self, trial, event, objective):
        if event["event"] == "validation" and event.get("epoch_end", True):
            self.epochs.n = event["epoch"]
            self.epochs.set_postfix(objective=f"{objective:.4f}",
                                    val_loss=f"{event['val_loss']:.4f}")
            if event["epoch"] >= self.epochs.total:
                self.epochs.set_description(f"trial {trial.number}: ending (checkpoint, "
                                            "plots, audio)")
            self.epochs.refresh()
        elif event["event"] == "artifact":
            self.epochs.set_postfix_str(f"wrote {Path(event['path']).name}")
        elif event["event"] == "end":
            self.epochs.set_description(f"trial {trial.number}: recording (MLflow, registry)")

    def trial_finished(self, trial, state, value, attrs):
        self.trials.update(1)
        if value is not None:
            better = min if trial.study.direction.name == "MINIMIZE" else max
            self.best = value if self.best is None else better(self.best, value)
            self.trials.set_postfix(best=f"{self.best:.4f}")
        tqdm.write(f"trial {trial.number}: {attrs['outcome']}: {attrs['reason']}")

    def close(self) -> None:
        self._closed.set()
        self.epochs.close()
        self.trials.close()
