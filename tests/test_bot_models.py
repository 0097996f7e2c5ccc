"""The registry's commands and buttons: /models, /best's buttons, promotion, export, audio.

The registry is a real MLflow one in the test's folder: two trials with MLflow runs,
registered through ``tuner_core.registry.register_version`` with a stand-in checkpoint
and an audio sample, so no training is needed.
"""

import io
import wave
import zipfile
from pathlib import Path

import pytest

from bot import service as service_module
from bot.keyboards import AudioButton, ModelAction, ModelButton
from tests.bot_support import ALICE, BotHarness, write_config
from tests.conftest import TEST_HPARAMS
from train.tacotron2.checkpoint import save_checkpoint
from train.tacotron2.hparams import HParams
from train.tacotron2.model import Tacotron2
from tuner_core import SmartTuner
from tuner_core.storage import TRIAL_RUN_ATTR
from tuner_core.study import create_study
from tuner_core.tracking.registering import BestCheckpoint, register_version
from tuner_core.tracking.store import ensure_experiment, mlflow_client

# The study is built with study.ask(), which Optuna's heartbeat storage warns about.
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def write_wav(path: Path) -> Path:
    with wave.open(str(path), "wb") as audio:
        audio.setnchannels(1)
        audio.setsampwidth(2)
        audio.setframerate(22050)
        audio.writeframes(b"\x00\x00" * 2205)
    return path


@pytest.fixture(scope="module")
def tuner(tmp_path_factory: pytest.TempPathFactory) -> SmartTuner:
    """Study "s": trial 0 (0.5) registered as version 1, trial 1 (0.3) as version 2."""
    tmp = tmp_path_factory.mktemp("registry")
    tuner = SmartTuner(write_config(tmp), environ={})
    client = mlflow_client(tuner.config)
    experiment = ensure_experiment(client, tuner.config)
    study = create_study(tuner.config, "s", 2)
    for number, value in enumerate((0.5, 0.3)):
        run_dir = tmp / f"trial_{number}"
        (run_dir / "artifacts").mkdir(parents=True)
        sample = write_wav(run_dir / "artifacts" / "sample_e0003.wav")
        # A real (untrained) tiny checkpoint: a version is logged as an MLflow model.
        hp = HParams.from_overrides({**TEST_HPARAMS, "learning_rate": 1e-3 * (number + 1)})
        checkpoint = save_checkpoint(run_dir / "best.pt", {
            "model": Tacotron2(hp).state_dict(), "hparams": hp.to_dict(), "epoch": 3, "step": 6,
            "optimizer": {}, "scheduler": {}})
        run_id = client.create_run(experiment).info.run_id
        client.log_artifact(run_id, str(sample), "audio")
        trial = study.ask()
        trial.set_user_attr(TRIAL_RUN_ATTR, run_id)
        trial.set_user_attr("run_dir", str(run_dir))
        register_version(tuner.config, trial, value, BestCheckpoint(
            checkpoint, {"learning_rate": hp.learning_rate}, {"val_loss": value}))
        study.tell(trial, value)
    return tuner


@pytest.fixture
def harness(tuner: SmartTuner) -> BotHarness:
    return BotHarness(tuner)


def promote(version: int) -> str:
    return ModelButton(action=ModelAction.PROMOTE, version=version).pack()


def export(version: int) -> str:
    return ModelButton(action=ModelAction.EXPORT, version=version).pack()


async def test_models_lists_versions_with_buttons(harness: BotHarness) -> None:
    typing, *_, reply = await harness.send(ALICE, "/models")
    # The first /models loads MLflow (seconds): the chat shows "typing…" meanwhile.
    assert typing.__api_method__ == "sendChatAction" and typing.action == "typing"
    lines = reply.text.split("\n")
    # One line a version, no table: the client wraps a long study name.
    assert lines == ["Registered models, newest first:",
                     "<b>v2</b> · val_loss 0.3 · <b>no alias</b> · trial 1 of <code>s</code>",
                     "<b>v1</b> · val_loss 0.5 · <b>no alias</b> · trial 0 of <code>s</code>"]
    buttons = [(button.text, button.callback_data)
               for row in reply.reply_markup.inline_keyboard for button in row]
    assert buttons == [("🏆 Promote v2", promote(2)), ("📦 Export v2", export(2)),
                       ("🏆 Promote v1", promote(1)), ("📦 Export v1", export(1))]


async def test_promoting_moves_the_champion_and_is_harmless_twice(harness: BotHarness) -> None:
    message, answer = await harness.press(ALICE, promote(2))
    assert message.text == "🏆 Version 2 is the champion."
    assert answer.text == "Promoted"
    message, answer = await harness.press(ALICE, promote(2))
    assert message.text == "🏆 Version 2 already is the champion; nothing changed."
    assert answer.text == "Already the champion"
    message, _ = await harness.press(ALICE, promote(1))
    assert "Version 1 is now the champion (version 2 is kept as 'previous')" in message.text
    *_, reply = await harness.send(ALICE, "/models")
    lines = reply.text.split("\n")
    assert "<b>previous</b>" in lines[1] and "<b>champion</b>" in lines[2]


@pytest.mark.parametrize("button", [promote, export])
async def test_an_unknown_version_is_answered_once_politely(harness: BotHarness,
                                                            button: object) -> None:
    [answer] = await harness.press(ALICE, button(99))
    assert answer.text == "There is no model version 99." and answer.show_alert


async def test_best_offers_promote_audio_and_export(harness: BotHarness) -> None:
    [reply] = await harness.send(ALICE, "/best")
    assert "<b>0.3</b> (trial 1)" in reply.text
    assert "MLflow run <code>" in reply.text
    assert "Model version 2" in reply.text
    labels = [button.text for row in reply.reply_markup.inline_keyboard for button in row]
    assert labels == ["🏆 Promote to champion", "🔊 Audio sample", "📦 Export"]


async def test_the_audio_button_sends_the_sample(harness: BotHarness, tuner: SmartTuner) -> None:
    study_id = (await harness.service.status())["study_id"]
    answer, voice = await harness.press(ALICE, AudioButton(study=study_id, trial=1).pack())
    assert answer.__api_method__ == "answerCallbackQuery"
    # A voice message, playable in the chat: OGG with Opus, and its duration.
    assert voice.__api_method__ == "sendVoice"
    assert voice.voice.data.startswith(b"OggS") and b"OpusHead" in voice.voice.data
    assert voice.duration == 1

    [answer] = await harness.press(ALICE, AudioButton(study=study_id, trial=7).pack())
    assert "has no trial 7" in answer.text


async def test_export_sends_a_zip_of_the_version(harness: BotHarness) -> None:
    requests = await harness.press(ALICE, export(2))
    [document] = [r for r in requests if r.__api_method__ == "sendDocument"]
    archive = zipfile.ZipFile(io.BytesIO(Path(document.document.path).read_bytes()))
    assert {"best.pt", "hparams.json", "config.yaml", "MODEL_CARD.md"} <= set(archive.namelist())
    assert "Version 2" in document.caption


async def test_an_export_too_big_to_send_says_where_it_is(
        harness: BotHarness, tuner: SmartTuner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "MAX_UPLOAD_BYTES", 10)
    requests = await harness.press(ALICE, export(1))
    [message] = [r for r in requests if r.__api_method__ == "sendMessage"]
    assert "larger than 50 MB" in message.text
    assert str(tuner.config.state_dir / "exports" / "v1") in message.text
