"""The whole product end to end: the real run_bot.py against the loopback Bot API.

A researcher tunes from the chat: ``/tune 2`` runs real tiny Tacotron2 trials in a
worker process, the notifications and the learning-curve plot arrive (through a
burst of 429s), ``/status`` and ``/best`` answer, Promote moves the MLflow alias,
and a second study is stopped with ``/stop``. A stranger gets nothing.
"""


from tests.conftest import TEST_HPARAMS
from tests.e2e.bot_process import running_bot
from tests.e2e.fake_telegram import FakeTelegram
from tests.test_tuner import write_config
from tuner_core import SmartTuner

ALICE = 1001
STRANGER = 6666


def test_a_researcher_tunes_from_the_chat(corpus, mel_cache, tmp_path):
    config = write_config(
        tmp_path, corpus, mel_cache,
        trainer={"hparams": {**TEST_HPARAMS, "epochs": 50}},
        # Every trial stops early after two epochs: short, and it exercises early stopping.
        early_stopping={"patience": {"type": "patience", "patience": 1, "min_delta": 100.0}},
        mlflow={"enabled": True},
        telegram={"enabled": True, "allowed_users": [ALICE], "chat_id": ALICE,
                  "poll_interval_s": 1})
    with FakeTelegram() as fake:
        fake.add_user(ALICE)
        fake.add_user(STRANGER)
        log = tmp_path / "bot.log"
        with running_bot(fake, config, log):
            # A stranger's commands do nothing: one short refusal at most, no study.
            fake.user_sends(STRANGER, "/tune 2")
            fake.user_sends(STRANGER, "/status")

            # The first study, through a burst of 429s on sendMessage.
            fake.fail_next(4, status=429, retry_after=1, methods=["sendMessage"])
            fake.user_sends(ALICE, "/tune 2")
            fake.wait_for(lambda: fake.find_message(ALICE, "finished: all trials done"),
                          timeout=300)
            fake.wait_for(lambda: [m for m in fake.messages_to(ALICE)
                                   if m.method == "sendPhoto"], timeout=30)
            assert fake.failures_served == 4
            texts = [m.text_or_caption for m in fake.messages_to(ALICE)]
            for trial in (0, 1):  # each trial's end told exactly once, through the 429s
                assert sum(f"Trial {trial} of" in t and "stopped early by" in t
                           and "at epoch 2" in t for t in texts) == 1, texts
            assert sum("finished: all trials done" in t for t in texts) == 1
            (first,) = [s["study_name"] for s in SmartTuner(config, environ={}).studies()]

            fake.user_sends(ALICE, "/status")
            fake.wait_for(lambda: fake.find_message(ALICE, f"Study {first}: finished"))
            fake.user_sends(ALICE, "/best")
            best = fake.wait_for(lambda: fake.find_message(ALICE, "🏆 Best of"))
            fake.user_presses(ALICE, best, best.button_data("🏆 Promote to champion"))
            fake.wait_for(lambda: fake.find_message(ALICE, "is now the champion")
                          or fake.find_message(ALICE, "is the champion"))
            models = SmartTuner(config, environ={}).models()
            assert any("champion" in model["aliases"] for model in models), models

            # A second study, stopped from the chat.
            fake.user_sends(ALICE, "/tune 4")
            fake.wait_for(lambda: len([m for m in fake.messages_to(ALICE)
                                       if "Started study" in m.text_or_caption]) == 2,
                          timeout=60)
            fake.user_sends(ALICE, "/stop")
            question = fake.wait_for(lambda: fake.find_message(ALICE, "Stop study"))
            fake.user_presses(ALICE, question, question.button_data("Yes, stop it"))
            fake.wait_for(lambda: fake.find_message(ALICE, "finished: stopped on request"),
                          timeout=120)
    output = log.read_text()

    refusals = fake.messages_to(STRANGER)
    assert len(refusals) <= 1 and first not in "".join(m.text_or_caption for m in refusals)
    studies = SmartTuner(config, environ={}).studies()
    assert len(studies) == 2 and studies[-1]["finished"]
    assert fake.token not in output
