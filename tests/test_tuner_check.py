"""What is checked before a study starts: `check`, and the refusals of `tune` and `worker`."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from tests.deadlines import scaled
from tests.test_tuner import ROOT, write_config
from train.tacotron2.data import DataError, check_corpus
from train.tacotron2.hparams import HParams
from tuner_core import NotReady, SmartTuner
from tuner_core.__main__ import main


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuner_core", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=scaled(timeout))


def standalone_config(tmp_path: Path, dataset: Path, **settings) -> Path:
    """A config whose state folder does not exist yet."""
    path = tmp_path / "standalone.yaml"
    path.write_text(yaml.safe_dump({"dataset_path": str(dataset),
                                    "state_dir": str(tmp_path / "fresh_state"),
                                    "mlflow": {"enabled": False}, **settings}))
    return path


@pytest.fixture
def flawed_corpus(corpus: Path, tmp_path: Path) -> Path:
    """Nine clips: two good ones first, then one of each flaw training refuses."""
    folder = tmp_path / "flawed"
    (folder / "wavs").mkdir(parents=True)
    good = sorted((corpus / "wavs").glob("*.wav"))[:3]
    for name, source in zip(("A", "B", "TEXTLESS"), good, strict=True):
        shutil.copy(source, folder / "wavs" / f"{name}.wav")
    samples, rate = sf.read(good[0], dtype="float32")
    sf.write(folder / "wavs" / "STEREO.wav", np.stack([samples, samples], axis=1), rate)
    sf.write(folder / "wavs" / "RATE.wav", samples, 44100)
    (folder / "wavs" / "EMPTY.wav").write_bytes(b"")
    sf.write(folder / "wavs" / "SHORT.wav", samples[:100], rate)
    (folder / "metadata.csv").write_text(
        "A|Fine.|fine.\nB|Fine too.|fine too.\nSTEREO|Two.|two.\nRATE|Fast.|fast.\n"
        "EMPTY|Nothing.|nothing.\nMISSING|Gone.|gone.\nSHORT|Brief.|brief.\nTEXTLESS||\n")
    return folder


def test_every_clip_header_and_every_text_are_checked(flawed_corpus):
    with pytest.raises(DataError) as error:
        check_corpus(flawed_corpus, HParams())
    message = str(error.value)
    assert message.startswith("6 of 8 utterances cannot be used: ")
    assert "STEREO.wav: 2 channels, expected mono" in message
    assert "RATE.wav: sampled at 44100 Hz, expected 22050 Hz" in message
    assert "EMPTY.wav: empty file (0 bytes)" in message
    assert "and 3 more" in message  # the message stays one line
    assert "\n" not in message


@pytest.mark.parametrize(("flaw", "expected"), [
    ("MISSING", "MISSING.wav: no such audio file"),
    ("SHORT", "SHORT.wav: 100 samples, too short for filter_length=1024"),
    ("TEXTLESS", "TEXTLESS.wav: text ''")])
def test_each_flaw_is_named(flawed_corpus, flaw, expected):
    metadata = flawed_corpus / "metadata.csv"
    lines = metadata.read_text().splitlines()
    metadata.write_text("\n".join(line for line in lines
                                  if line.split("|")[0] in ("A", "B", flaw)) + "\n")
    with pytest.raises(DataError, match="1 of 3 utterances cannot be used") as error:
        check_corpus(flawed_corpus, HParams())
    assert expected in str(error.value)


def test_non_utf8_metadata_names_the_line(tmp_path):
    (tmp_path / "metadata.csv").write_bytes(b"A|Fine.|fine.\nB|Caf\xe9.|caf\xe9.\n")
    with pytest.raises(DataError, match=r"metadata\.csv:2: not UTF-8 text \(byte e9"):
        check_corpus(tmp_path, HParams())


def test_a_failed_check_writes_nothing_into_the_state_folder(tmp_path, flawed_corpus, capsys):
    path = standalone_config(tmp_path, flawed_corpus)
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] dataset: 6 of 8 utterances cannot be used" in out
    assert "[ok] storage: sqlite:///" in out and "(new: the first study creates it)" in out
    assert not (tmp_path / "fresh_state").exists()


def test_tune_refuses_a_study_that_cannot_work_in_one_line(tmp_path, corpus):
    path = standalone_config(tmp_path, tmp_path / "nowhere")
    proc = cli("tune", "--config", str(path), "--trials", "1", "--quiet")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: dataset: {tmp_path / 'nowhere'}: no such corpus folder or filelist"]
    assert not (tmp_path / "fresh_state" / "optuna.db").exists()  # no study, no storage
    with pytest.raises(NotReady, match=r"^dataset: "):
        SmartTuner(path).start_study(1)


@pytest.mark.parametrize("storage", ["postgresql://tuner@127.0.0.1:1/tuner",
                                     "sqlite:///{tmp}/a_file/optuna.db"])
def test_an_unusable_storage_is_one_line(tmp_path, corpus, storage):
    (tmp_path / "a_file").write_text("not a folder")
    storage = storage.format(tmp=tmp_path)
    path = standalone_config(tmp_path, corpus, storage=storage)
    for command in (["studies"], ["tune", "--trials", "1", "--quiet"]):
        proc = cli(*command, "--config", str(path))
        assert proc.returncode == 2, proc.stderr
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("error: ") and "Traceback" not in proc.stderr
        assert "127.0.0.1" in line or "a_file" in line


def test_an_unreachable_mlflow_server_fails_the_check_at_once(tmp_path, corpus):
    # Without a bound, MLflow retries the request for minutes; the timeout is generous.
    path = standalone_config(tmp_path, corpus,
                             mlflow={"enabled": True, "tracking_uri": "http://127.0.0.1:9"})
    proc = cli("check", "--config", str(path), timeout=120)
    assert proc.returncode == 1
    assert "[FAIL] mlflow: http://127.0.0.1:9: " in proc.stdout
    proc = cli("tune", "--config", str(path), "--trials", "1", "--quiet", timeout=120)
    assert proc.returncode == 2 and "error: mlflow: http://127.0.0.1:9: " in proc.stderr


def test_tune_exits_non_zero_when_every_trial_failed(tmp_path, corpus, mel_cache):
    # The corpus is 22050 Hz; a trial at 16000 Hz fails on its first clip.
    path = write_config(tmp_path, corpus, mel_cache, hyperparameter_search_space={
        "sampling_rate": {"type": "categorical", "choices": [16000]}})
    proc = cli("tune", "--config", str(path), "--trials", "1", "--study", "doomed", "--quiet")
    assert proc.returncode == 1
    assert "error: every trial of study doomed failed" in proc.stderr


@pytest.mark.parametrize("command", ["tune", "worker"])
def test_a_state_folder_below_a_file_is_refused_in_one_line(tmp_path, capsys, command):
    (tmp_path / "a_file").write_text("not a folder")
    state = tmp_path / "a_file" / "state"
    path = standalone_config(tmp_path, tmp_path / "nowhere", state_dir=str(state))
    args = ["--trials", "1"] if command == "tune" else ["--study", "any"]
    assert main([command, "--config", str(path), *args, "--quiet"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line == (f"error: state folder: {state}: cannot be created "
                    f"({tmp_path / 'a_file'} is not a writable folder)")
    with pytest.raises(NotReady, match=r"^state folder: "):
        SmartTuner(path).start_study(1)


@pytest.mark.parametrize("state", ["{tmp}/a_file/state", "/proc/smart_tuner_state"])
def test_check_fails_a_state_folder_that_cannot_be_created(tmp_path, capsys, state):
    if state.startswith("/proc") and not Path("/proc/self").exists():
        pytest.skip("no /proc on this machine")
    (tmp_path / "a_file").write_text("not a folder")
    state = state.format(tmp=tmp_path)
    path = standalone_config(tmp_path, tmp_path / "nowhere", state_dir=state)
    assert main(["check", "--config", str(path)]) == 1
    out = capsys.readouterr().out
    parent = Path(state).parent
    assert f"[FAIL] state folder: {state}: cannot be created ({parent} is not a writable " \
           "folder)" in out.splitlines()
    assert not Path(state).exists()
