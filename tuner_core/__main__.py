"""Smart Tuner's command line (python -m tuner_core, or smart-tuner once installed):
studies of Tacotron2 trainings, their trials, and the registered models.

Every command but init takes --config: default $SMART_TUNER_CONFIG, else ./smart_tuner.yaml
(what "init" writes), else ./config/smart_tuner.yaml. Relative paths in a config are taken from
its folder; those of --set KEY.PATH=VALUE, which overrides a setting, from the working
folder. --study defaults to the latest study. Each command's --help describes it.
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tuner_core
from train.arguments import positive_int, program_name
from tuner_core import reporting, storage, study
from tuner_core.config.location import CONFIG_HELP, STARTER_CONFIG, default_config_path
from tuner_core.config.starter import write_starter
from tuner_core.errors import (
    ConfigError,
    NotReady,
    RegistryError,
    StorageUnavailable,
    StudyBusy,
    StudyNotFound,
)
from tuner_core.lazy import LazyModule
from tuner_core.logs import setup_logging
from tuner_core.reporting.progress import ProgressBars

if TYPE_CHECKING:
    import optuna

    from tuner_core.api import SmartTuner

# The commands' modules load Optuna, pydantic and more: not for --help.
check = LazyModule("tuner_core.check")
summary = LazyModule("tuner_core.reporting.summary")

log = logging.getLogger("tuner_core")


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
    print(f"Trials: {result['n_trials']} ({summary.outcomes_in_words(result['outcomes'])})")
    if result["best_value"] is None:
        print("No trial completed.")
        return
    print(f"Best value: {result['best_value']:.4f} (trial {result['best_trial']}), "
          f"{reporting.confirmation_line(result['confirmation'])}")
    print_table([{"parameter": k, "value": v} for k, v in result["best_parameters"].items()],
                ["parameter", "value"])


# --- commands ---------------------------------------------------------------------------

def cmd_tune(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """Create a study (or resume one) and run its trials here.

    Prints the search space, shows the progress of the trials and of the running
    trial's epochs, and ends with the best parameters. Other machines that reach the
    same storage can join the study with "worker --study NAME".
    """
    config = tuner.config
    check.require_ready(config)
    created = study.create_study(config, args.study, args.trials)
    print(f"study {created.study_name} on {config.storage_shown}")
    for line in tuner.search_space():
        print(f"  {line}")
    return _work(tuner, created, args)


def cmd_worker(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """Join a study from any machine that reaches its storage, or stand by for every study.

    Together, the study's workers run exactly its trial budget; a worker whose trials
    are done stays until the others' trials end, to retry any whose worker dies. With
    --follow the worker stands by: it works on whichever study is running (the oldest
    first) until SIGTERM. With --devices it runs one trainer per device at once.
    """
    storage.open_worker_storage(tuner.config)  # from here on, waits out a database away
    check.require_ready(tuner.config)
    if args.follow:
        study.follow(tuner.config)
        return 0
    return _work(tuner, study.load_study(tuner.config, args.study), args)


def cmd_workers(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """List the fleet: each worker's host, devices, current trials and last heartbeat."""
    rows = [worker | {"devices": ",".join(worker["devices"]),
                      "state": ("lost" if worker["lost"] else
                                "idle" if worker["idle"] else "working"),
                      "trials": " ".join(f"{t['study']}#{t['number']}@{t['device']}"
                                         for t in worker["trials"]) or None,
                      "last_seen": f"{time.time() - worker['last_seen']:.0f}s ago"}
            for worker in tuner.workers()]
    print_table(rows, ["host", "pid", "devices", "following", "state", "last_seen", "trials"])
    return 0


def _work(tuner: SmartTuner, joined: optuna.Study, args: argparse.Namespace) -> int:
    bars = None if args.quiet else ProgressBars(
        joined.user_attrs["n_trials"], tuner.config.fixed_hparams.get("epochs", 500))
    try:
        study.run_worker(tuner.config, joined, bars)
    finally:
        if bars:
            bars.close()
    result = reporting.result_summary(joined)
    print_result(result)
    print(reporting.closing_note(tuner.config, joined, str(args.config)))
    if set(result["states"]) == {"FAIL"}:
        print(f"error: every trial of study {joined.study_name} failed; the trials command "
              "shows why", file=sys.stderr)
        return 1
    return 0


def cmd_status(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """Show a study's trials by outcome, its best value, the running trials and the time left."""
    status = tuner.status(args.study)
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    counts = summary.outcomes_in_words(status["outcomes"])
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
    """Show the best trial of a study: its value, parameters and checkpoint."""
    best = tuner.best(args.study)
    if args.json:
        print(json.dumps(best, indent=2, default=str))
    elif best is None:
        print("no trial has completed yet")
    else:
        print(f"trial {best['number']}: value {best['value']:.4f}, "
              f"{reporting.confirmation_line(best['confirmation'])}")
        print_table([{"parameter": k, "value": v} for k, v in best["params"].items()],
                    ["parameter", "value"])
        print(f"checkpoint: {best['best_checkpoint']}")
        print(f"listening: {summary.listening_line(best['listening'])}")
    return 0


def cmd_trials(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """List a study's trials: state, outcome, value, and why each ended."""
    rows = tuner.trials(args.study, args.limit)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print_table(rows, ["number", "state", "outcome", "confirms", "value", "stop_epoch",
                           "cer_ratio", "mcd", "reason"])
    return 0


def cmd_stop(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """Ask a study's workers to stop gracefully.

    The request goes through the study storage, so it reaches the workers on every
    machine; each saves its trial's checkpoint and leaves within seconds.
    """
    name = tuner.request_stop(args.study, by="cli")
    print(f"stop requested for study {name}; its workers stop within seconds")
    return 0


def cmd_studies(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """List every study in the storage, with its budget and best value."""
    if not tuner.storage_exists():
        raise tuner.no_study_yet()
    print_table(tuner.studies(), ["study_name", "n_trials", "budget", "best_value", "finished"])
    return 0


def cmd_check(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """Check the setup: config, dataset, storage, MLflow, torch and CUDA, bot token.

    Exits 1 when a check fails.
    """
    ok = True
    for name, passed, detail in check.run_checks(tuner.config):
        ok &= passed
        print(f"[{'ok' if passed else 'FAIL'}] {name}: {detail}")
    return 0 if ok else 1


def cmd_report(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """Write a study's report: figures and report.md.

    Learning curves, the optimisation history, hyperparameter importances, the best
    trial's alignment, and a summary of outcomes and stop reasons.
    """
    chosen = tuner.study(args.study)
    out_dir = args.out or tuner.config.state_dir / "reports" / chosen.study_name
    path = reporting.write_report(chosen, out_dir)
    print(f"report of study {chosen.study_name}: {path}")
    return 0


def cmd_models(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """List the registered model versions, newest first, with their aliases."""
    tuner.require_registry()  # reading a SQLite store that is not there would create it
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
    """Make a model version the champion.

    The champion alias moves to the version; the former champion becomes "previous",
    so "promote previous" rolls back. A version that fails registry.requirements is
    refused, naming them, unless --force.
    """
    try:
        info = tuner.promote(args.version, args.force)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if info["already"]:
        print(f"version {info['version']} is the champion already")
    elif info["replaced"] is None:
        print(f"version {info['version']} is the champion")
    else:
        print(f"version {info['version']} is the champion; version {info['replaced']} "
              f"is now 'previous'")
    return 0


def cmd_export(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """Export a model version to a self-contained folder.

    The folder holds the checkpoint, hparams.json, the config used (secrets masked),
    MODEL_CARD.md and an audio sample.
    """
    try:
        out = tuner.export(args.ref, args.out)
    except RegistryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {args.ref} to {out}")
    return 0


def cmd_delete(tuner: SmartTuner, args: argparse.Namespace) -> int:
    """Delete a study: its Optuna study, its MLflow runs and its checkpoints folder.

    Asks first, unless --yes. A study with running trials is refused: stop it first.
    Registered model versions are kept (their files are copies in MLflow's artifact
    store). MLflow deletes runs softly; "mlflow gc" removes them for good.
    """
    try:
        footprint = study.study_footprint(tuner.config, args.study)
    except StudyBusy as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    folder = footprint.checkpoint_dir or "none"
    print(f"study {footprint.study_name}: {footprint.n_trials} trials, "
          f"{len(footprint.mlflow_run_ids)} MLflow runs, checkpoints folder {folder}")
    if not args.yes and not _confirmed("Delete all of it?"):
        print("nothing deleted")
        return 1
    study.delete_study(tuner.config, footprint)
    print(f"deleted study {footprint.study_name}; registered model versions are kept")
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    """Write a starter config, smart_tuner.yaml, into FOLDER (default: here).

    It is the full config, every setting explained, its paths taken from FOLDER. A file
    that is there already is never replaced.
    """
    try:
        path = write_starter(args.folder)
    except FileExistsError:
        print(f"error: {args.folder / STARTER_CONFIG} exists; nothing written", file=sys.stderr)
        return 2
    command = program_name("tuner_core") or Path(sys.argv[0]).name
    print(f"wrote {path}; set its dataset_path, then: {command} check --config {path}")
    return 0


def _confirmed(question: str) -> bool:
    try:
        return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")
    except EOFError:  # no one to answer (stdin is not a terminal): no
        print()
        return False


COMMANDS = {"tune": cmd_tune, "worker": cmd_worker, "status": cmd_status, "best": cmd_best,
            "trials": cmd_trials, "stop": cmd_stop, "studies": cmd_studies, "check": cmd_check,
            "workers": cmd_workers,
            "report": cmd_report, "models": cmd_models, "promote": cmd_promote,
            "export": cmd_export, "delete": cmd_delete}


def _options(name: str, parser: argparse.ArgumentParser) -> None:
    """The options of command ``name`` (the common ones come from the parent parser)."""
    if name in ("tune", "worker"):
        parser.add_argument("--quiet", action="store_true",
                            help="no progress bars; log to the console instead")
        parser.add_argument("--devices", metavar="SPEC", help="one trainer per device at once: "
                            "CUDA indices (0,1,2,3), auto, or cpu:N (default: trainer.devices)")
    if name == "tune":
        parser.add_argument("--trials", type=positive_int, metavar="N",
                            help="the study's trial budget, all workers together "
                                 "(default: optimization.n_trials)")
    if name == "worker":
        which = parser.add_mutually_exclusive_group(required=True)
        which.add_argument("--study", metavar="NAME", help="the study")
        which.add_argument("--follow", action="store_true",
                           help="stand by: work on whichever study is running, then the next")
    if name == "delete":
        parser.add_argument("--study", required=True, metavar="NAME", help="the study")
    elif name not in ("worker", "workers", "studies", "check", "models", "promote", "export",
                      "init"):
        parser.add_argument("--study", metavar="NAME",
                            help="the study (default: a new name for tune, else the latest)")
    if name in ("status", "best", "trials", "models"):
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    if name == "trials":
        parser.add_argument("--limit", type=positive_int, metavar="N",
                            help="only the last N trials")
    if name == "report":
        parser.add_argument("--out", type=Path, metavar="DIR",
                            help="the folder to write into (default: STATE_DIR/reports/STUDY)")
    if name == "promote":
        parser.add_argument("version", help="a version number, an alias (previous: roll "
                                            "back) or best (the best value)")
        parser.add_argument("--force", action="store_true",
                            help="promote it even if it fails registry.requirements")
    if name == "export":
        parser.add_argument("ref", metavar="VERSION",
                            help="a version number or an alias (champion, previous)")
        parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                            help="the folder to write")
    if name == "delete":
        parser.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    if name == "init":
        parser.add_argument("folder", nargs="?", type=Path, default=Path("."), metavar="FOLDER",
                            help="where to write it (default: the working folder)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("tuner_core"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, default=default_config_path(), help=CONFIG_HELP)
    common.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                        dest="overrides",
                        help="override a setting of the config, e.g. optimization.n_trials=10 "
                             "(the value is read as YAML, a relative path in it taken from "
                             "the working folder; repeatable)")
    common.add_argument("--verbose", action="store_true", help="log debug messages too")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in {**COMMANDS, "init": cmd_init}.items():
        doc = inspect.getdoc(command) or ""
        p = sub.add_parser(name, parents=[] if name == "init" else [common],
                           help=doc.splitlines()[0], description=doc,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _options(name, p)
    return parser


def _writable_folder(path: Path) -> bool:
    return path.is_dir() and os.access(path, os.W_OK | os.X_OK)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "init":  # it writes the config that the others read
        return cmd_init(args)
    if getattr(args, "devices", None):  # validated as trainer.devices is
        args.overrides.append(f"trainer.devices={json.dumps(args.devices)}")
    try:
        tuner = tuner_core.SmartTuner(args.config, overrides=args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    state_dir = tuner.config.state_dir
    works = args.command in ("tune", "worker")  # which create the state folder
    if works:
        name, usable, detail = check.state_folder(tuner.config)
        if not usable:
            print(f"error: {name}: {detail}", file=sys.stderr)
            return 2
    if args.command != "check":  # which writes nothing, not even into the state folder
        # The other commands write no log into a state folder that is not there (a read
        # must create nothing) or not theirs to write.
        quiet = getattr(args, "quiet", False) or getattr(args, "follow", False)  # no bars
        setup_logging(state_dir, verbose=args.verbose, console=not (works and not quiet),
                      log_file=works or _writable_folder(state_dir))
    try:
        return COMMANDS[args.command](tuner, args)
    except (StudyNotFound, StorageUnavailable, NotReady, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
