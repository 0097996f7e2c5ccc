"""The trial runner: one Optuna trial = one supervised trainer run.

For every validation event of the trainer the runner computes the objective,
reports it to the trial, and asks in turn the early-stop controller, Optuna's
pruner and the study's stop request. Their decision ends or changes the run:

=============  ====================================================================
continue       keep training
stop           the trial completes with its best objective (e.g. patience ran out)
prune          the trial is pruned (a criterion, the pruner, or divergence)
adapt          terminate, correct the hyperparameters (:mod:`tuner_core.rules.adaptation`)
               and restart from the best checkpoint, at most ``max_adaptations``
               times; after that an adapt decision stops the trial
=============  ====================================================================

A trainer that crashes (exit code other than 0 or the divergence code) fails the
trial with its exit code and log tail; the study goes on. Everything the bot and
the reports need ends up on the trial's user attributes in the storage:
``outcome``, ``criterion``, ``reason``, ``recommendation``, ``stop_epoch``,
``adaptations``, ``run_dir``, ``worker``, ``host``, ``device`` (where it trained),
``best_checkpoint``, ``last_metrics``,
``anomalies`` (:mod:`tuner_core.rules.metric_history`), ``seconds`` and, for failures,
``exit_code`` and ``log_tail``. Per validation, the trial keeps the value reported to the
pruner (its intermediate values); the listeners hear every metric (MLflow keeps them all).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from train.tacotron2.events import EXIT_DIVERGED
from train.tacotron2.hparams import HParams
from tuner_core.config.location import PROJECT_ROOT
from tuner_core.config.sections import Config
from tuner_core.logs import AlreadyLogged
from tuner_core.rules.adaptation import adapt_hparams
from tuner_core.rules.early_stop import Action, Decision, EarlyStopController, EpochMetrics
from tuner_core.rules.metric_history import detect_anomalies
from tuner_core.rules.search_space import suggest
from tuner_core.storage.attributes import (
    CONFIRMS_ATTR,
    TRAINING_SEED_ATTR,
    VALIDATION_METRICS,
    Outcome,
)
from tuner_core.storage.retries import retried_from
from tuner_core.trial.devices import DEFAULT_DEVICE, Device
from tuner_core.trial.evaluation import ListeningEvaluations
from tuner_core.trial.listener import TrialListener, is_new_best
from tuner_core.trial.process import SharedLauncher, TrainerLauncher, TrainerProcess
from tuner_core.trial.rendering import BackgroundRenders

log = logging.getLogger(__name__)

# Who ran a trial, when several machines work on one study: "host:pid".
HOST = socket.gethostname()
WORKER = f"{HOST}:{os.getpid()}"


class TrialCrashed(AlreadyLogged, RuntimeError):
    """The trainer exited abnormally; the trial is failed (its reason logged) and the study
    goes on."""


class WorkerLeaving(BaseException):
    """The worker is leaving (SIGTERM) mid-trial: its trainer has saved and exited.

    Not an :class:`Exception`, so that Optuna does not record the trial as failed: it
    stays running, its heartbeat stops, and another worker retries it from its last
    checkpoint, as it would had the worker been killed."""


@dataclass
class _Run:
    """What the runner has learned about a trial so far."""

    direction: str
    confirming: bool = False  # a confirmation trial, which the pruner leaves alone
    best_objective: float | None = None
    reports: int = 0
    epoch: int = 0
    judged_step: int = 0  # the optimizer step of the last validation judged
    seconds: float = 0.0
    best_checkpoint: str | None = None
    adaptations: list[dict[str, Any]] = field(default_factory=list)
    # Per-validation series, {metric: [values]}, where anomalies are looked for. Not kept
    # on the trial: a user attribute shows in every row of `optuna trials`.
    history: dict[str, list[Any]] = field(default_factory=dict)
    # Spikes and non-finite values found in the history, kept on the trial as "anomalies".
    anomalies: list[dict[str, Any]] = field(default_factory=list)

    def observe(self, objective: float, epoch: int) -> None:
        self.reports += 1
        self.epoch = epoch
        if math.isfinite(objective) and (
                self.best_objective is None
                or (objective < self.best_objective if self.direction == "minimize"
                    else objective > self.best_objective)):
            self.best_objective = objective


def objective_value(event: dict[str, Any], metric: str, penalty: float, direction: str) -> float:
    """``metric`` penalised by the train/validation gap, in the study's direction.

    The gap ``max(0, val_loss - train_loss)`` is added when minimising and
    subtracted when maximising, so overfitting always makes the objective worse.
    """
    value = event.get(metric)
    if value is None:
        return math.nan
    gap = max(0.0, (event.get("val_loss") or 0.0) - (event.get("train_loss") or 0.0))
    sign = 1.0 if direction == "minimize" else -1.0
    return float(value) + sign * penalty * gap


class TrialRunner:
    """The Optuna objective: ``study.optimize(TrialRunner(...))``."""

    def __init__(self, config: Config, study_name: str,
                 stop_requested: Callable[[], bool] = lambda: False,
                 listener: TrialListener | None = None, poll_s: float = 1.0,
                 device: Device = DEFAULT_DEVICE, trainers: int = 1,
                 launcher: SharedLauncher | None = None,
                 leaving: threading.Event | None = None):
        """``device``: where this runner's trainers train; ``trainers``: how many this
        worker runs at once (one per device), which share its CPU cores; ``launcher``: the
        worker's, shared by its runners (else the runner starts its own, if
        ``trainer.preload``); ``leaving``: set when the worker leaves, which ends the
        running trial with :class:`WorkerLeaving`."""
        self.leaving = leaving or threading.Event()
        self.config = config
        self.device = device
        self.trainers = trainers
        self.study_name = study_name
        self.stop_requested = stop_requested
        self.listener = listener or TrialListener()
        self.poll_s = poll_s
        self.direction = config.optimization.direction
        self.renders = BackgroundRenders(config, self.child_env(threads=1),
                                         self.listener.artifact_rendered, lambda: self.launcher)
        self.evaluations = ListeningEvaluations(config, self.renders, study_name)
        self._owns_launcher = launcher is None
        self.launchers = launcher if launcher is not None or not config.trainer.preload else (
            SharedLauncher(config.trainer.python, PROJECT_ROOT, self.child_env(threads=1)))

    @property
    def launcher(self) -> TrainerLauncher | None:
        """The launcher started so far, if any."""
        return self.launchers.current if self.launchers is not None else None

    def _ready_launcher(self) -> TrainerLauncher | None:
        """The worker's launcher (``trainer.preload``), started or replaced if need be."""
        return self.launchers.ready() if self.launchers is not None else None

    def close(self) -> None:
        """End the trainer launcher, if it is this runner's own; call when the worker leaves."""
        if self._owns_launcher and self.launchers is not None:
            self.launchers.close()

    def __call__(self, trial: optuna.Trial) -> float:
        params = suggest(trial, self.config.hyperparameter_search_space)
        # A confirmation trial trains its configuration again with another seed.
        queued_with = trial.user_attrs
        seed = queued_with.get(TRAINING_SEED_ATTR)
        hparams = HParams.from_overrides({**self.config.fixed_hparams, **params,
                                          **({"seed": seed} if seed is not None else {}),
                                          **self.device.hparams()}).to_dict()
        run_dir = self.config.checkpoint_dir / self.study_name / f"trial_{trial.number:04d}"
        resume = self._checkpoint_to_resume(trial)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", WORKER)
        trial.set_user_attr("host", HOST)
        if self.device is not DEFAULT_DEVICE:
            trial.set_user_attr("device", self.device.name)
        self.listener.trial_started(trial, hparams, run_dir)

        run = _Run(self.direction, confirming=CONFIRMS_ATTR in queued_with)
        controller = EarlyStopController(self.config.early_stopping, self.direction)
        opt = self.config.optimization
        while True:
            decision, process = self._supervise(trial, run, controller, hparams, run_dir, resume)
            if decision is None or decision.action is not Action.ADAPT:
                break
            if len(run.adaptations) >= opt.max_adaptations:
                decision = dataclasses.replace(
                    decision, action=Action.STOP,
                    reason=f"{decision.reason} (no adaptations left after {opt.max_adaptations})")
                break
            changes = adapt_hparams(hparams, opt.adaptation.learning_rate_factor,
                                    opt.adaptation.dropout_increase,
                                    opt.adaptation.weight_decay_factor)
            hparams.update({name: new for name, (_, new) in changes.items()})
            adaptation = {"epoch": decision.epoch, "criterion": decision.criterion,
                          "reason": decision.reason, "changes": changes, "time": time.time()}
            run.adaptations.append(adaptation)
            trial.set_user_attr("adaptations", run.adaptations)
            self.listener.trial_adapted(trial, adaptation)
            log.info("trial %d: adapting after %s: %s", trial.number, decision.criterion,
                     ", ".join(f"{k} {a:g}->{b:g}" for k, (a, b) in changes.items()))
            controller.reset_after_adaptation()
            resume = run_dir / "best.pt"
        if decision is not None and hparams["artifacts"] == "end" and run.best_checkpoint:
            # The stopped trainer skipped its end-of-run plots; they are drawn meanwhile.
            self.renders.start(trial.number, Path(run.best_checkpoint))
        return self._finish(trial, run, decision, process)

    # --- one trainer process -----------------------------------------------------------
    def _supervise(self, trial: optuna.Trial, run: _Run, controller: EarlyStopController,
                   hparams: dict[str, Any], run_dir: Path, resume: Path | None
                   ) -> tuple[Decision | None, TrainerProcess]:
        """Run the trainer until it ends or a decision ends it; the decision, if any."""
        process = self._start_trainer(hparams, run_dir, resume, self._threads(trial))
        try:
            return self._follow(trial, run, controller, hparams, process), process
        except BaseException:  # the worker is going: the trainer saves and exits first
            process.terminate(self.config.trainer.grace_period_s)
            raise

    def _follow(self, trial: optuna.Trial, run: _Run, controller: EarlyStopController,
                hparams: dict[str, Any], process: TrainerProcess) -> Decision | None:
        """Judge the trainer's events until it ends; the decision that ended it, if any."""
        decision: Decision | None = None
        for event in process.events(self.poll_s):
            if self.leaving.is_set():
                raise WorkerLeaving(f"trial {trial.number}: the worker is leaving")
            if event is None:
                if decision is None and self.stop_requested():
                    decision = self._user_stop(run)
                    process.terminate(self.config.trainer.grace_period_s)
                continue
            # The trial's record ends at its decision: a trainer may validate once more before
            # the SIGTERM reaches it (a replay has emitted its whole run). The checkpoints of
            # the deciding validation itself, which follow it, still count.
            later = event["event"] == "validation" or (
                event["event"] == "checkpoint" and event["is_best"]
                and event["step"] > run.judged_step)
            if decision is not None and later:
                continue
            objective = None
            if event["event"] == "validation":
                objective = self._on_validation(trial, run, event)
                decision = self._decide(trial, run, controller, event, objective)
                if decision is not None:
                    process.terminate(self.config.trainer.grace_period_s)
            elif event["event"] == "checkpoint" and event["is_best"]:
                run.best_checkpoint = event["path"]
                if self._draws_new_best(trial, run, hparams):
                    self.renders.start(trial.number, Path(run.best_checkpoint))
            elif event["event"] == "end":
                run.seconds += event.get("seconds") or 0.0
            elif event["event"] == "start":
                event["host"] = HOST
                if self.device is DEFAULT_DEVICE:  # the one the trainer chose
                    trial.set_user_attr("device", event.get("device"))
                else:  # as the fleet names it: the trainer sees its CUDA device as cuda:0
                    event["device"] = self.device.name
            self.listener.trainer_event(trial, event, objective)
        return decision

    def _draws_new_best(self, trial: optuna.Trial, run: _Run, hparams: dict[str, Any]) -> bool:
        """Whether the trial's new best checkpoint beats every completed trial, and so is
        drawn now (a trainer with ``artifacts=end`` draws only when it ends); not while an
        earlier draw of the trial still runs, nor in a study whose values are listened to
        (measured once a trial has ended: its validations cannot say)."""
        # With nothing to beat yet, the trial draws itself when it ends.
        return (self.config.trainer.render_new_best and hparams["artifacts"] == "end"
                and not self.config.optimization.listened
                and run.best_objective is not None and not self.renders.busy(trial.number)
                and is_new_best(trial.study, run.best_objective, first=False))

    def _threads(self, trial: optuna.Trial) -> int:
        """``trainer.threads``, else this machine's cores shared by its working trainers:
        this worker's (one per device) and other workers' on this machine.

        Torch's default (every core) in several trainers at once oversubscribes the CPU:
        on 2 cores, two trainers at the default threads ran 3x slower than at one each.
        """
        if self.config.trainer.threads is not None:
            return self.config.trainer.threads
        others = sum(1 for attrs in (t.user_attrs for t in trial.study.get_trials(
                         deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)))
                     if attrs.get("worker", "").startswith(f"{HOST}:")
                     and attrs["worker"] != WORKER)
        return max(1, (os.cpu_count() or 1) // (self.trainers + others))

    def _start_trainer(self, hparams: dict[str, Any], run_dir: Path,
                       resume: Path | None, threads: int) -> TrainerProcess:
        args = ["--data", str(self.config.dataset_path), "--out", str(run_dir),
                "--cache-dir", str(self.config.state_dir / "mel_cache"),
                "--hparams", json.dumps(hparams),
                "--no-log-file"]  # its stderr is the run's log (TrainerProcess)
        if resume is not None:
            args += ["--resume", str(resume)]
        trainer = self.config.trainer
        if trainer.warm_start is not None:  # the trainer skips it when resuming
            args += ["--warm-start", str(trainer.warm_start)]
            if trainer.ignore_layers:
                args += ["--ignore-layers", ",".join(trainer.ignore_layers)]
        program = "train"
        if trainer.replay is not None:
            args += ["--table", str(trainer.replay)]
            program = "train.replay"
        return TrainerProcess(args, run_dir, python=trainer.python, cwd=PROJECT_ROOT,
                              env=self.child_env(threads) | self.device.environment(),
                              launcher=self._ready_launcher(),
                              program=program)

    @staticmethod
    def child_env(threads: int) -> dict[str, str]:
        """The environment of a trainer (or renderer): no bot token, one fewer process that
        could leak it; torch's intra-op threads set."""
        return {**{key: value for key, value in os.environ.items()
                   if key != "TELEGRAM_BOT_TOKEN"},
                "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                            os.environ.get("PYTHONPATH")])),
                "OMP_NUM_THREADS": str(threads)}

    def _on_validation(self, trial: optuna.Trial, run: _Run, event: dict[str, Any]) -> float:
        opt = self.config.optimization
        objective = objective_value(event, opt.training_metric, opt.overfitting_penalty,
                                    self.direction)
        run.observe(objective, event["epoch"])
        run.judged_step = event["step"]
        # Report steps count validations, so they keep increasing across adaptation
        # restarts (which replay epochs from the best checkpoint).
        pruned_on = opt.pruner.metric
        reported = objective if pruned_on is None else float(event.get(pruned_on) or math.nan)
        if math.isfinite(reported):
            trial.report(reported, run.reports)
        metrics = {key: event.get(key) for key in VALIDATION_METRICS} | {
            "objective": objective if math.isfinite(objective) else None}
        for key, value in metrics.items():
            run.history.setdefault(key, []).append(value)
        trial.set_user_attr("last_metrics", metrics)
        # Only the newest validation: the earlier ones were checked as they arrived.
        new = detect_anomalies(run.history, since=len(run.history["epoch"]) - 1)
        for anomaly in new:
            log.warning("trial %d: %s", trial.number, anomaly.message)
            run.anomalies.append(dataclasses.asdict(anomaly))
        if new:
            trial.set_user_attr("anomalies", run.anomalies)
        return objective

    def _decide(self, trial: optuna.Trial, run: _Run, controller: EarlyStopController,
                event: dict[str, Any], objective: float) -> Decision | None:
        decision = controller.observe(EpochMetrics.from_event(event, objective))
        if decision.action is not Action.CONTINUE:
            return decision
        # A confirmation trial is trained in full: its value is what is being measured.
        if not run.confirming and trial.should_prune():
            pruner = type(trial.study.pruner).__name__
            return Decision(
                action=Action.PRUNE, criterion="pruner", epoch=event["epoch"],
                reason=f"{pruner}: objective {objective:.4f} at epoch {event['epoch']} is "
                       f"worse than the other trials at the same point",
                recommendation="this region of the search space looks unpromising; "
                               "the sampler will move away from it")
        if self.stop_requested():
            return self._user_stop(run)
        return None

    @staticmethod
    def _user_stop(run: _Run) -> Decision:
        return Decision(action=Action.PRUNE, criterion="user", epoch=run.epoch,
                        reason="stopped on request", recommendation="")

    def _checkpoint_to_resume(self, trial: optuna.Trial) -> Path | None:
        """For a retry of a trial whose worker died: that trial's last checkpoint."""
        frozen = trial.study.get_trials(deepcopy=False)[trial.number]
        original = retried_from(frozen)
        if original is None:
            return None
        last = Path(frozen.user_attrs.get("run_dir", "")) / "last.pt"
        if last.is_file():
            log.info("trial %d retries trial %d: resuming from %s", trial.number, original, last)
            return last
        log.warning("trial %d retries trial %d, which left no checkpoint: starting over",
                    trial.number, original)
        return None

    # --- the end of a trial ---------------------------------------------------------------
    def _finish(self, trial: optuna.Trial, run: _Run, decision: Decision | None,
                process: TrainerProcess) -> float:
        code = process.returncode
        attrs: dict[str, Any] = {"seconds": run.seconds, "epochs_trained": run.epoch,
                                 "best_checkpoint": run.best_checkpoint, "exit_code": code}
        if decision is None and code == EXIT_DIVERGED:
            decision = Decision(action=Action.PRUNE, criterion="divergence", epoch=run.epoch,
                                reason="the loss became NaN/inf",
                                recommendation="lower the learning rate or the gradient clip "
                                               "threshold, or add warm-up steps")
        if decision is None and code != 0:
            log_tail = process.log_tail()
            # The trainer's last words ("OSError: [Errno 28] No space left on device: ..."),
            # at most 200 characters: the start names the error, the end often the file.
            last = next((line.strip() for line in reversed(log_tail.splitlines())
                         if line.strip()), "")
            if len(last) > 200:
                last = f"{last[:100]}…{last[-99:]}"
            attrs |= {"outcome": Outcome.FAILED, "criterion": "crash", "stop_epoch": run.epoch,
                      "reason": f"trainer exited with code {code}" + (f": {last}" if last else ""),
                      "recommendation": "read the log tail; fix the data or the hyperparameter "
                                        "that breaks the trainer",
                      "log_tail": log_tail}
            self._record(trial, optuna.trial.TrialState.FAIL, None, attrs)
            raise TrialCrashed(attrs["reason"])

        if decision is None:
            attrs |= {"outcome": Outcome.COMPLETED, "criterion": None, "stop_epoch": run.epoch,
                      "reason": f"trained all {run.epoch} epochs", "recommendation": ""}
        else:
            outcome = {Action.STOP: Outcome.EARLY_STOPPED, Action.PRUNE: Outcome.PRUNED}[
                decision.action]
            if decision.criterion == "user":
                outcome = Outcome.STOPPED_BY_USER
            attrs |= {"outcome": outcome, "criterion": decision.criterion,
                      "stop_epoch": decision.epoch, "reason": decision.reason,
                      "recommendation": decision.recommendation}

        if attrs["outcome"] in (Outcome.PRUNED, Outcome.STOPPED_BY_USER) or (
                run.best_objective is None):
            self._record(trial, optuna.trial.TrialState.PRUNED, None, attrs)
            raise optuna.TrialPruned(attrs["reason"])
        value = self.evaluations.before_record(trial, run.best_objective, attrs)
        self._record(trial, optuna.trial.TrialState.COMPLETE, value, attrs)
        self.evaluations.after_record(trial.number)
        return value

    def _record(self, trial: optuna.Trial, state: optuna.trial.TrialState,
                value: float | None, attrs: dict[str, Any]) -> None:
        for key, value_ in attrs.items():
            trial.set_user_attr(key, value_)
        level = logging.WARNING if state is optuna.trial.TrialState.FAIL else logging.INFO
        log.log(level, "trial %d %s: %s", trial.number, attrs["outcome"], attrs["reason"])
        self.listener.trial_finished(trial, state, value, attrs)
