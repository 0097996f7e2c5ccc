"""Warm trainer starts: trainers forked by a pre-imported ``python -m train.launcher``
behave as ``python -m train`` does, each in its own process."""

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TEST_HPARAMS
from tests.deadlines import scaled
from train.tacotron2.checkpoint import load_checkpoint
from tuner_core.config.sections import Config
from tuner_core.trial.process import TrainerLauncher, TrainerProcess
from tuner_core.trial.rendering import BackgroundRenders

ROOT = Path(__file__).resolve().parents[1]


def environment(threads: int) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads)}


@pytest.fixture
def launcher() -> Iterator[TrainerLauncher]:
    launcher = TrainerLauncher(sys.executable, ROOT, environment(threads=1))
    yield launcher
    launcher.close()


def train_args(corpus: Path, mel_cache: Path, out: Path, **changes: object) -> list[str]:
    return ["--data", str(corpus), "--out", str(out), "--cache-dir", str(mel_cache),
            "--hparams", json.dumps({**TEST_HPARAMS, **changes}), "--no-log-file"]


def start(launcher: TrainerLauncher | None, args: list[str], run_dir: Path,
          threads: int = 1) -> TrainerProcess:
    return TrainerProcess(args, run_dir, python=sys.executable, cwd=ROOT,
                          env=environment(threads), launcher=launcher)


def events_until(process: TrainerProcess, kind: str | None = None) -> list[dict]:
    """Its events until one of ``kind`` (or the end of the stream)."""
    events = []
    for event in process.events(poll_s=scaled(120)):
        assert event is not None, "no event for minutes"
        events.append(event)
        if event["event"] == kind:
            break
    return events


def test_each_trainer_is_its_own_process_with_its_own_threads_and_log(
        launcher, corpus, mel_cache, tmp_path):
    runs = []
    for threads in (1, 2):
        run_dir = tmp_path / f"run{threads}"
        process = start(launcher, train_args(corpus, mel_cache, run_dir, epochs=1), run_dir,
                        threads)
        runs.append((process, events_until(process), run_dir))
    (first, first_events, first_dir), (second, second_events, _) = runs
    assert first.returncode == 0 and second.returncode == 0
    assert [e["event"] for e in (first_events[0], first_events[-1])] == ["start", "end"]
    assert first_events[-1]["status"] == "done"
    assert first_events[0]["pid"] == first.pid != second.pid
    assert first.pid != launcher._proc.pid  # forked, not the launcher itself
    assert first_events[0]["threads"] == 1 and second_events[0]["threads"] == 2
    assert "training on" in (first_dir / "train.log").read_text()  # its stderr


def test_sigterm_saves_and_exits_0_with_a_stopped_end_event(launcher, corpus, mel_cache,
                                                            tmp_path):
    process = start(launcher, train_args(corpus, mel_cache, tmp_path, epochs=200), tmp_path)
    events_until(process, "validation")
    assert process.terminate(grace_s=scaled(60)) == 0
    end = events_until(process)[-1]
    assert end["event"] == "end" and end["status"] == "stopped" and "SIGTERM" in end["reason"]
    assert load_checkpoint(tmp_path / "last.pt")["step"] == end["step"]


def test_bad_arguments_and_bad_data_exit_as_python_m_train_does(launcher, corpus, mel_cache,
                                                                tmp_path):
    usage = start(launcher, ["--data", str(corpus)], tmp_path / "usage")
    assert events_until(usage) == [] and usage.returncode == 2
    assert "--out are required" in usage.log_tail()

    args = train_args(tmp_path / "missing", mel_cache, tmp_path / "data")
    no_data = start(launcher, args, tmp_path / "data")
    events_until(no_data)
    assert no_data.returncode == 1 and "missing" in no_data.log_tail()


def test_a_trainer_saves_and_exits_when_its_launcher_dies(launcher, corpus, mel_cache,
                                                          tmp_path):
    process = start(launcher, train_args(corpus, mel_cache, tmp_path, epochs=200), tmp_path)
    events_until(process, "validation")
    launcher._proc.kill()  # as when the worker above it is killed: the kernel's SIGTERM follows
    end = events_until(process)[-1]
    assert end["event"] == "end" and end["status"] == "stopped" and "SIGTERM" in end["reason"]
    assert process.returncode == -signal.SIGTERM  # what the dead launcher could not tell
    assert load_checkpoint(tmp_path / "last.pt")["step"] == end["step"]


def test_without_a_working_launcher_the_trainer_starts_cold(corpus, mel_cache, tmp_path,
                                                            caplog):
    broken = TrainerLauncher("/bin/false", ROOT, environment(threads=1))
    process = start(broken, train_args(corpus, mel_cache, tmp_path, epochs=1), tmp_path)
    assert events_until(process)[-1]["status"] == "done" and process.returncode == 0
    assert "starting python -m train cold" in caplog.text
    assert not broken.alive


def test_a_render_forked_by_the_launcher_that_fails_is_logged_with_its_error(
        launcher, corpus, tmp_path, caplog):
    damaged = tmp_path / "best.pt"
    damaged.write_bytes(b"not a checkpoint")
    drawn: list[Path] = []
    config = Config(dataset_path=corpus, state_dir=tmp_path / "state",
                    trainer={"python": sys.executable})
    renders = BackgroundRenders(config, environment(threads=1),
                                lambda _, path: drawn.append(path), launcher=lambda: launcher)
    renders.start(7, damaged)
    renders.wait()
    assert drawn == [] and not list(tmp_path.glob("best.pt.rendering*"))
    assert "trial 7: drawing its plots failed (exit 1): error:" in caplog.text
    assert "best.pt.rendering" in (tmp_path / "train.log").read_text()


def test_the_launcher_outlives_the_thread_that_started_it(corpus, mel_cache, tmp_path):
    # A worker's devices are threads: the one whose trainer started the launcher may end
    # (its last trial done) while another device's trainer or evaluation still runs.
    started: list[TrainerLauncher] = []
    device = threading.Thread(target=lambda: started.append(
        TrainerLauncher(sys.executable, ROOT, environment(threads=1))))
    device.start()
    device.join()
    (launcher,) = started
    try:
        process = start(launcher, train_args(corpus, mel_cache, tmp_path, epochs=1), tmp_path)
        assert events_until(process)[-1]["status"] == "done" and process.returncode == 0
        assert launcher.alive
    finally:
        launcher.close()
    assert not launcher.alive
