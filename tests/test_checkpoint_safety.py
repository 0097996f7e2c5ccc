"""Loading a checkpoint never runs code from it: every entry point reads checkpoints with
torch's weights-only loader, which takes this project's and NVIDIA's checkpoints and refuses
a crafted one in one line naming the file, before its payload can run."""

import collections
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TEST_HPARAMS
from tests.deadlines import scaled
from train.tacotron2.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_resumable,
    read_checkpoint_file,
)
from train.tacotron2.events import parse
from train.tacotron2.hparams import HParams
from train.tacotron2.model import Tacotron2
from train.tacotron2.trainer import Trainer
from train.tacotron2.warm_start import nvidia_name, warm_start_model

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("restore_logging")


class Payload:
    """Unpickled, it writes ``marker``: what a crafted checkpoint would do with os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('the payload ran')",)


@pytest.fixture(scope="module")
def run_dir(corpus, mel_cache, tmp_path_factory) -> Path:
    """A one-epoch run of the trainer: its last.pt and best.pt."""
    out = tmp_path_factory.mktemp("run")
    hp = HParams.from_overrides({**TEST_HPARAMS, "epochs": 1})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Trainer, "_install_signal_handlers", lambda self: None)
        assert Trainer(hp, corpus, out, cache_dir=mel_cache).run() == 0
    return out


@pytest.fixture
def marker(tmp_path) -> Path:
    return tmp_path / "the-payload-ran"


@pytest.fixture(params=["smart_tuner", "nvidia", "plain_pickle"])
def evil(request, run_dir, marker, tmp_path) -> Path:
    """A crafted checkpoint whose loading would write ``marker``: a real checkpoint of ours
    with a payload among its RNG states, an NVIDIA-shaped one with it as the optimiser
    state, or a bare pickle of it (not torch.save's zip)."""
    path = tmp_path / f"{request.param}.pt"
    if request.param == "smart_tuner":
        state = load_checkpoint(run_dir / "last.pt")
        state["rng"]["python"] = Payload(marker)
        torch.save(state, path)
    elif request.param == "nvidia":
        torch.save({"state_dict": {}, "optimizer": Payload(marker), "learning_rate": 1e-3,
                    "iteration": 1}, path)
    else:
        path.write_bytes(pickle.dumps({"model": Payload(marker)}, protocol=2))
    return path


def assert_refused(error: CheckpointError | str, path: Path, marker: Path) -> None:
    text = str(error)
    assert text.startswith(f"{path}: unreadable checkpoint") and "\n" not in text, text
    assert not marker.exists(), "the payload ran"


# --- what must still load ----------------------------------------------------------------

def test_a_trainer_checkpoint_loads_resumes_and_warm_starts(run_dir, corpus, mel_cache,
                                                            tmp_path, monkeypatch, capsys):
    capsys.readouterr()
    state, source = load_resumable(run_dir / "last.pt")
    assert source == run_dir / "last.pt" and state["step"] == 2
    assert state["rng"]["numpy"][1].dtype.name == "uint32"  # numpy's RNG state, allow-listed
    hp = HParams.from_dict(state["hparams"])
    warm_start_model(Tacotron2(hp), run_dir / "best.pt")

    monkeypatch.setattr(Trainer, "_install_signal_handlers", lambda self: None)
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    (resumed / "last.pt").write_bytes((run_dir / "last.pt").read_bytes())
    trainer = Trainer(HParams.from_overrides({"epochs": 2}, base=hp), corpus, resumed,
                      cache_dir=mel_cache, resume=resumed / "last.pt")
    assert trainer.run() == 0
    events = [parse(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["resumed_from"] == str(resumed / "last.pt") and events[0]["step"] == 2
    assert [e["epoch"] for e in events if e["event"] == "validation"] == [2]


def test_an_nvidia_checkpoint_as_its_train_py_saves_it_loads(tmp_path):
    hp = HParams.from_overrides(TEST_HPARAMS)
    source = Tacotron2(hp)
    optimizer = torch.optim.Adam(source.parameters(), lr=1e-3, weight_decay=1e-6)
    source(*fake_batch(hp))[1].sum().backward()
    optimizer.step()
    path = tmp_path / "checkpoint_1000"
    # NVIDIA/tacotron2 train.py's save_checkpoint: an OrderedDict of weights, Adam's state.
    torch.save({"iteration": 1000, "state_dict": collections.OrderedDict(
        (nvidia_name(name), value) for name, value in source.state_dict().items()),
        "optimizer": optimizer.state_dict(), "learning_rate": 1e-3}, path)
    target = Tacotron2(hp)
    assert len(warm_start_model(target, path)) == len(source.state_dict())
    assert read_checkpoint_file(path)["iteration"] == 1000


def fake_batch(hp: HParams) -> tuple[torch.Tensor, ...]:
    text = torch.randint(1, hp.n_symbols, (2, 7))
    mels = torch.randn(2, hp.n_mel_channels, 12)
    return text, torch.tensor([7, 7]), mels, torch.tensor([12, 12])


# --- what must be refused, without running it -------------------------------------------

def test_load_checkpoint_and_load_resumable_refuse_a_crafted_file(evil, marker):
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(evil)
    assert_refused(error.value, evil, marker)
    with pytest.raises(CheckpointError) as error:
        load_resumable(evil)
    assert_refused(error.value, evil, marker)


def test_a_payload_calling_a_function_is_named(evil, marker):
    if evil.name == "plain_pickle.pt":  # torch's loader stops at its protocol, earlier
        pytest.skip("refused before its payload is reached")
    with pytest.raises(CheckpointError, match=r"refused, it holds (builtins\.)?exec, not weights"):
        read_checkpoint_file(evil)
    assert not marker.exists()


def test_warm_start_refuses_a_crafted_file(evil, marker):
    with pytest.raises(CheckpointError) as error:
        warm_start_model(Tacotron2(HParams.from_overrides(TEST_HPARAMS)), evil)
    assert_refused(error.value, evil, marker)


def test_the_trainers_command_line_refuses_a_crafted_resume_or_warm_start(
        evil, marker, corpus, mel_cache, tmp_path, capsys):
    from train.__main__ import main

    args = ["--data", str(corpus), "--out", str(tmp_path / "out"), "--cache-dir", str(mel_cache)]
    assert main([*args, "--resume", str(evil)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert_refused(line.removeprefix("error: "), evil, marker)

    hparams = ",".join(f"{key}={value}" for key, value in TEST_HPARAMS.items())
    assert main([*args, "--hparams", hparams, "--warm-start", str(evil), "--no-log-file"]) == 1
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("error: ") and "Traceback" not in last
    assert_refused(last.removeprefix("error: "), evil, marker)


def test_render_refuses_a_crafted_checkpoint(evil, marker, corpus, capsys):
    from train.render import main

    assert main(["--checkpoint", str(evil), "--data", str(corpus)]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert_refused(line.removeprefix("error: "), evil, marker)


def test_synthesize_refuses_a_crafted_checkpoint(run_dir, marker, tmp_path):
    evil = tmp_path / "evil.pt"
    state = load_checkpoint(run_dir / "best.pt")
    state["validation"] = Payload(marker)
    torch.save(state, evil)
    proc = subprocess.run([sys.executable, "-m", "train.synthesize", "--checkpoint", str(evil),
                           "--text", "Hello.", "--out", str(tmp_path / "hello.wav")],
                          cwd=ROOT, capture_output=True, text=True, timeout=scaled(120))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ")
    assert_refused(line.removeprefix("error: "), evil, marker)
    assert not (tmp_path / "hello.wav").exists()
