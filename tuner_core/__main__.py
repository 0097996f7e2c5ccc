"""``python -m tuner_core``: the headless command line of Smart Tuner.

    tune     --trials N [--study NAME]   create (or resume) a study and run it here
    worker   --study NAME                join a study from any machine that reaches its storage
    status   [--study NAME]              trials by state, best value, running trials
    best     [--study NAME]              the best trial's value and parameters
    trials   [--study NAME] [--limit N]  the trials with state, value and stop reason
    stop     [--study NAME]              ask the study's workers to stop gracefully
    studies                              every study in the storage
    check                                config, dataset, storage, torch/CUDA, bot token
    report   [--study NAME] [--out DIR]  figures and report.md (default STATE_DIR/reports/STUDY)
    models                               the registered model versions, newest first
    promote  VERSION                     make a version (number or alias) the champion
    export   VERSION|ALIAS --out DIR     checkpoint, hparams, config, model card, audio sample

Every command takes ``--config`` (default ``$SMART_TUNER_CONFIG`` or
``config/smart_tuner.yaml``); ``--study`` defaults to the latest study.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import optuna
from tqdm import tqdm

from train.arguments import positive_int
from tuner_core import SmartTuner
from tuner_core.config import ConfigError
from tuner_core.logs import setup_logging
from tuner_core.runner import TrialListener
from tuner_core.search_space import describe
from tuner_core.study import StudyNotFound, create_study, load_study, run_worker
from tuner_core.summary import result_summary

log = logging.getLogger("tuner_core")


class ProgressBars(TrialListener):
    """Two progress bars: trials of the study, epochs of the running trial."""

    def __init__(self, n_trials: int, epochs: int):
        self.trials = tqdm(total=n_trials, desc="trials", unit="trial", position=0)
        self.epochs = tqdm(total=epochs, desc="epochs", unit="epoch", position=1, leave=False)
        self.best: float | None = None

    def trial_started(self, trial, hparams, run_dir):
        self.epochs.reset(total=hparams["epochs"])
        self.epochs.set_description(f"trial {trial.number}")

    def trainer_event(self, trial, event, objective):
        if event["event"] == "validation" and event.get("epoch_end", True):
            self.epochs.n = event["epoch"]
            self.epochs.set_postfix(objective=f"{objective:.4f}",
                                    val_loss=f"{event['val_loss']:.4f}")
            self.epochs.refresh()

    def trial_finished(self, trial, state, value, attrs):
        self.trials.update(1)
        if value is not None:
            better = min if trial.study.direction.name == "MINIMIZE" else max
            self.best = value if self.best is None else better(self.best, value)
            self.trials.set_postfix(best=f"{self.best:.4f}")
        tqdm.write(f"trial {trial.number}: {attrs['outcome']}: {attrs['reason']}")

    def close(self) -> None:
        self.epochs.close()
        self.trials.close()


# --- printing ---------------------------------------------------------------------------

def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))


def print_result(result: dict[str, Any]) -> None:
    print(f"\n=== Study {result['study_name']} ===")
    states = ", ".join(f"{k.lower()} {v}" for k, v in result["states"].items())
    print(f"Trials: {result['n_trials']} ({states})")
    if result["best_value"] is None:
        print("No trial completed.")
        return
    print(f"Best value: {result['best_value']:.4f} (trial {result['best_trial']})")
    print_table([{"parameter": k, "value": v} for k, v in result["best_parameters"].items()],
                ["parameter", "value"])


# --- commands ---------------------------------------------------------------------------

def cmd_tune(tuner: SmartTuner, args: argparse.Namespace) -> int:
    config = tuner.config
    study = create_study(config, args.study, args.trials)
    print(f"study {study.study_name} on {config.storage_shown}")
    for line in describe(config.hyperparameter_search_space):
        print(f"  {line}")
    return _work(tuner, study, args)


def cmd_worker(tuner: SmartTuner, args: argparse.Namespace) -> int:
    return _work(tuner, load_study(tuner.config, args.study), args)


def _work(tuner: SmartTuner, study: optuna.Study, args: argparse.Namespace) -> int:
    bars = None if args.quiet else ProgressBars(
        study.user_attrs["n_trials"], tuner.config.fixed_hparams.get("epochs", 500))
    try:
        run_worker(tuner.config, study, bars)
    finally:
        if bars:
            bars.close()
    print_result(result_summary(study))
    if tuner.config.mlflow.enabled:
        from tuner_core.tracking import mlflow_ui_command  # the worker has loaded MLflow

        print(f"MLflow UI: {mlflow_ui_command(tuner.config)}")
    return 0


def cmd_status(tuner: SmartTuner, args: argparse.Namespace) -> int:
    status = tuner.status(args.study)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    counts = ", ".join(f"{k.lower()} {v}" for k, v in status["counts"].items() if v) or "none"
    print(f"study {status['study_name']}: {status['state']}"
          + (f" ({status['end_reason']})" if status["end_reason"] else ""))
    print(f"trials: {counts} of {status['n_trials']}")
    print(f"best value: {_fmt(status['best_value'])} (trial {_fmt(status['best_trial'])})")
    for trial in status["running"]:
        metrics = trial["last_metrics"] or {}
        print(f"running: trial {trial['number']} epoch {_fmt(metrics.get('epoch'))} "
              f"val_loss {_fmt(metrics.get('val_loss'))}")
    print(f"elapsed: {status['elapsed_s'] / 60:.1f} min"
          + (f", about {status['eta_s'] / 60:.1f} min left" if status["eta_s"] else ""))
    return 0


def cmd_best(tuner: SmartTuner, args: argparse.Namespace) -> int:
    best = tuner.best(args.study)
    if args.json:
        print(json.dumps(best, indent=2, default=str))
    elif best is None:
        print("no trial has completed yet")
    else:
        print(f"trial {best['number']}: value {best['value']:.4f}")
        print_table([{"parameter": k, "value": v} for k, v in best["params"].items()],
                    ["parameter", "value"])
        print(f"checkpoint: {best['best_checkpoint']}")
    return 0


def cmd_trials(tuner: SmartTuner, args: argparse.Namespace) -> int:
    rows = tuner.trials(args.study, args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_table(rows, ["number", "state", "outcome", "value", "stop_epoch", "reason"])
    return 0


def cmd_stop(tuner: SmartTuner, args: argparse.Namespace) -> int:
    name = tuner.request_stop(args.study, by="cli")
    print(f"stop requested for study {name}; its workers stop within seconds")
    return 0


def cmd_studies(tuner: SmartTuner, args: argparse.Namespace) -> int:
    print_table(tuner.studies(), ["study_name", "n_trials", "budget", "best_value", "finished"])
    return 0


def cmd_check(tuner: SmartTuner, args: argparse.Namespace) -> int:
    from tuner_core.check import run_checks

    ok = True
    for name, passed, detail in run_checks(tuner.config):
        ok &= passed
        print(f"[{'ok' if passed else 'FAIL'}] {name}: {detail}")
    return 0 if ok else 1


def cmd_report(tuner: SmartTuner, args: argparse.Namespace) -> int:
    from tuner_core.report import write_report  # matplotlib only loads for this command

    study = tuner.study(args.study)
    out_dir = args.out or tuner.config.state_dir / "reports" / study.study_name
    path = write_report(study, out_dir)
    print(f"report of study {study.study_name}: {path}")
    return 0


def cmd_models(tuner: SmartTuner, args: argparse.Namespace) -> int:
    rows = tuner.models()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    elif not rows:
        print(f"model {tuner.config.registry.model_name} has no version yet")
    else:
        print_table([row | {"aliases": ", ".join(row["aliases"]),
                            "created": time.strftime("%Y-%m-%d %H:%M",
                                                     time.localtime(row["created"]))}
                     for row in rows], ["version", "aliases", "value", "study", "trial", "created"])
    return 0


def cmd_promote(tuner: SmartTuner, args: argparse.Namespace) -> int:
    from tuner_core.registry import RegistryError  # MLflow loads only for registry commands

    try:
        info = tuner.promote(args.version)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if info["replaced"] is None:
        print(f"version {info['version']} is the champion already")
    else:
        print(f"version {info['version']} is the champion; version {info['replaced']} "
              f"is now 'previous'")
    return 0


def cmd_export(tuner: SmartTuner, args: argparse.Namespace) -> int:
    from tuner_core.registry import RegistryError

    try:
        out = tuner.export(args.ref, args.out)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.ref} to {out}")
    return 0


COMMANDS = {"tune": cmd_tune, "worker": cmd_worker, "status": cmd_status, "best": cmd_best,
            "trials": cmd_trials, "stop": cmd_stop, "studies": cmd_studies, "check": cmd_check,
            "report": cmd_report, "models": cmd_models, "promote": cmd_promote,
            "export": cmd_export}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tuner_core", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=Path(
        os.environ.get("SMART_TUNER_CONFIG", "config/smart_tuner.yaml")))
    common.add_argument("--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        p = sub.add_parser(name, parents=[common])
        if name in ("tune", "worker"):
            p.add_argument("--quiet", action="store_true", help="no progress bars")
        if name == "tune":
            p.add_argument("--trials", type=positive_int, help="the study's trial budget")
        if name not in ("studies", "check", "models", "promote", "export"):
            p.add_argument("--study", required=name == "worker", help="study name")
        if name in ("status", "best", "trials", "models"):
            p.add_argument("--json", action="store_true", help="machine-readable output")
        if name == "trials":
            p.add_argument("--limit", type=positive_int, help="only the last N trials")
        if name == "report":
            p.add_argument("--out", type=Path, help="the folder to write the report into")
        if name == "promote":
            p.add_argument("version", help="a version number or an alias (previous: roll back)")
        if name == "export":
            p.add_argument("ref", help="a version number or an alias (champion, previous)")
            p.add_argument("--out", type=Path, required=True, help="the folder to write")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tuner = SmartTuner(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    quiet_console = args.command in ("tune", "worker") and not args.quiet
    setup_logging(tuner.config.state_dir, verbose=args.verbose, console=not quiet_console)
    try:
        return COMMANDS[args.command](tuner, args)
    except StudyNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
