"""Train Tacotron2 on an LJSpeech-format corpus or a filelist.

    python -m train --data DATA --out RUN_DIR [--profile tiny] [--hparams k=v,...]
    python -m train --data DATA --out RUN_DIR --resume RUN_DIR/last.pt [--hparams k=v,...]
    python -m train --data DATA --out RUN_DIR --warm-start PRETRAINED.pt [--ignore-layers ...]
    python -m train --list-hparams

Event lines (JSON, see train/tacotron2/events.py) go to stdout; the log to stderr and
RUN_DIR/train.log (a caller that keeps stderr itself passes --no-log-file). On --resume
the checkpoint's hyperparameters are the base and --hparams changes them (optimiser
settings only make sense there).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import sys
from pathlib import Path

from train.arguments import described, program_name
from train.tacotron2.audio import AudioError
from train.tacotron2.checkpoint import CheckpointError, load_resumable
from train.tacotron2.data import DataError
from train.tacotron2.events import LOG_FILE
from train.tacotron2.hparams import PROFILES, HParams, HParamsError
from train.tacotron2.trainer import Trainer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program_name("train"),
                                     description=described(__doc__, "train"),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path,
                        help="LJSpeech folder (metadata.csv + wavs/) or a path|text filelist")
    parser.add_argument("--out", type=Path, help="run folder")
    parser.add_argument("--hparams", default="",
                        help="overrides, k=v,k=v or a JSON object (see --list-hparams)")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--profile", choices=sorted(PROFILES), help="a named set of sizes")
    profile.add_argument("--resume", type=Path, help="checkpoint to continue from")
    parser.add_argument("--cache-dir", type=Path,
                        help="mel cache shared between runs (default RUN_DIR/mel_cache)")
    parser.add_argument("--warm-start", type=Path, metavar="CHECKPOINT",
                        help="start from the model weights of a checkpoint, this project's or "
                             "NVIDIA/tacotron2's (a dict with state_dict), as NVIDIA's "
                             "--warm_start: no optimiser state, schedule or step; --resume "
                             "wins over it")
    parser.add_argument("--ignore-layers", default="", metavar="NAME,...",
                        help="with --warm-start: parameters that keep their fresh "
                             "initialisation, comma-separated, in this project's names "
                             "(NVIDIA's are accepted too), e.g. embedding.weight")
    parser.add_argument("--verbose", action="store_true", help="log every step")
    parser.add_argument("--no-log-file", action="store_true",
                        help=f"log to stderr only, not to RUN_DIR/{LOG_FILE} too")
    parser.add_argument("--list-hparams", action="store_true",
                        help="list every hyperparameter with its default, valid values and "
                             "meaning, then exit")
    args = parser.parse_args(argv)
    if not args.list_hparams and (args.data is None or args.out is None):
        parser.error("--data and --out are required")
    args.ignore_layers = [name.strip() for name in args.ignore_layers.split(",") if name.strip()]
    if args.ignore_layers and not args.warm_start:
        parser.error("--ignore-layers needs --warm-start")
    return args


def hparams_table() -> list[dict[str, str]]:
    """Every hyperparameter: name, type, default, valid values and help, from its field."""
    from train.tacotron2.schedules import SCHEDULES  # the schedule registry owns its names

    rows = []
    for spec in dataclasses.fields(HParams):
        lo, hi = spec.metadata["lo"], spec.metadata["hi"]
        choices = tuple(SCHEDULES) if spec.name == "lr_schedule" else spec.metadata["choices"]
        if choices:
            valid = " | ".join(choices)
        elif lo is not None:
            valid = f">= {lo}" if hi is None else f"{lo} to {hi}"
        else:
            valid = ""
        rows.append({"name": spec.name, "type": getattr(spec.type, "__name__", str(spec.type)),
                     "default": json.dumps(spec.default), "valid": valid,
                     "help": spec.metadata["doc"]})
    return rows


def print_hparams() -> None:
    """``name: type = default (valid values)``, and its help indented below."""
    for row in hparams_table():
        valid = f" ({row['valid']})" if row["valid"] else ""
        print(f"{row['name']}: {row['type']} = {row['default']}{valid}")
        if row["help"]:
            print(f"    {row['help']}")


class _StderrFormatter(logging.Formatter):
    """The log's format, but a fatal error (see :func:`fail`) is ``error: MESSAGE`` alone."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "fatal", False):
            return f"error: {record.getMessage()}"
        return super().format(record)


class _LogFile(logging.FileHandler):
    """RUN_DIR/train.log; a file that cannot be written (a full disk) is said once, in one
    line on stderr, and then left alone, instead of a traceback for every record."""

    broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the lines a full disk refused are lost, as said
            super().close()

    def handleError(self, record: logging.LogRecord) -> None:
        self.broken = True
        error = sys.exc_info()[1]
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        print(f"warning: cannot write the log file {self.baseFilename}: {reason}; "
              "logging to stderr only", file=sys.stderr, flush=True)


def setup_logging(run_dir: Path, verbose: bool, log_file: bool = True) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(_StderrFormatter(formatter._fmt))
    handlers: list[logging.Handler] = [stderr]
    if log_file:
        # Before stderr: whatever the file's own failure prints comes before the record,
        # so a fatal error stays the last line on stderr.
        handlers.insert(0, _LogFile(run_dir / LOG_FILE))
        handlers[0].setFormatter(formatter)
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=handlers,
                        force=True)


def fail(message: str) -> int:
    """End the run on an error: logged (train.log has it with its time), and the last line
    on stderr is ``error: MESSAGE``, one line, which a caller (the tuner) reports as the
    reason. Returns the exit code, 1."""
    logging.getLogger("train").error("%s", message, extra={"fatal": True})
    return 1


def describe_os_error(error: OSError) -> str:
    """One line naming the file: ``PATH: No space left on device`` (or the error's own
    words, when it has them: ``cannot write the mel cache file PATH: ...``)."""
    text = str(error).strip()
    if "Original Traceback" in text:  # re-raised from a DataLoader worker: its last line
        text = text.splitlines()[-1].split(": ", 1)[-1]
    if text.startswith("[Errno") and error.strerror:
        names = [name for name in (error.filename, error.filename2) if name is not None]
        return f"{' -> '.join(map(str, names))}: {error.strerror}" if names else error.strerror
    return text.splitlines()[0] if text else type(error).__name__


def build_hparams(args: argparse.Namespace) -> HParams:
    if args.resume:
        base = HParams.from_dict(load_resumable(args.resume)[0]["hparams"])
    else:
        base = HParams.from_overrides(PROFILES.get(args.profile))
    return HParams.from_overrides(args.hparams, base=base)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_hparams:
        print_hparams()
        return 0
    try:
        hp = build_hparams(args)
    except (HParamsError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        setup_logging(args.out, args.verbose, log_file=not args.no_log_file)
    except OSError as exc:
        print(f"error: {describe_os_error(exc)}", file=sys.stderr)
        return 1
    try:
        return Trainer(hp, args.data, args.out, cache_dir=args.cache_dir,
                       resume=args.resume, warm_start=args.warm_start,
                       ignore_layers=args.ignore_layers).run()
    except (DataError, AudioError, CheckpointError) as exc:
        return fail(str(exc))
    except OSError as exc:  # a full disk, a read-only folder: which file, in one line
        return fail(describe_os_error(exc))


if __name__ == "__main__":
    sys.exit(main())
