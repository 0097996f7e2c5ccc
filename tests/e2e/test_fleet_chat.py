"""The fleet in the chat, end to end: the real run_bot.py against the loopback Bot API.

``/tune`` starts the bot's local worker on the config's two CPU devices, a standing worker
(``worker --follow``, two CPU devices too) on this machine joins the study, and ``/status``
and ``/workers`` show which device of which worker trains which trial. Each trial replays
a recorded run, paced to last seconds (tests/paced.py).
"""

import re
import socket
import time

import optuna
import yaml
from optuna.trial import TrialState

from tests.deadlines import scaled
from tests.e2e.bot_process import running_bot
from tests.e2e.fake_telegram import FakeTelegram, SentMessage
from tests.test_fleet import fleet_config, worker

ALICE = 1001
HOST = socket.gethostname()


def test_status_shows_the_fleet_that_tune_set_to_work(corpus, tmp_path, postgres_url):
    storage = postgres_url
    path = fleet_config(tmp_path, corpus, storage, delay_s=1.0)  # 24 s a trial
    settings = yaml.safe_load(path.read_text())
    settings["trainer"]["devices"] = "cpu:2"
    settings["telegram"] = {"enabled": True, "allowed_users": [ALICE], "chat_id": ALICE,
                            "poll_interval_s": 1}
    path.write_text(yaml.safe_dump(settings))
    with FakeTelegram() as fake, worker(path, "--follow") as standing:
        fake.add_user(ALICE)
        log = tmp_path / "bot.log"
        with running_bot(fake, path, log):
            fake.user_sends(ALICE, "/tune 4")
            fake.wait_for(lambda: fake.find_message(ALICE, "Started study"), timeout=60)

            def running() -> int:
                [study] = optuna.get_all_study_summaries(storage)
                return len(optuna.load_study(study_name=study.study_name, storage=storage)
                           .get_trials(deepcopy=False, states=(TrialState.RUNNING,)))

            fake.wait_for(lambda: running() == 4, timeout=120)  # two devices of each worker
            # /status answers from the status the notifier read at its last poll ("as of"),
            # which may be from before the standing worker's trials began: ask again.
            status = fake.wait_for(lambda: asked(fake, "/status", "Trials: 4 running"),
                                   timeout=60)
            fake.user_sends(ALICE, "/workers")
            workers = fake.wait_for(lambda: fake.find_message(ALICE, "Workers"), timeout=30)
            print(status.text, workers.text, sep="\n\n")  # what the chat shows, with -s
            # The bot's worker outlives the bot: it leaves once the study is done.
            fake.wait_for(lambda: fake.find_message(ALICE, "finished: all trials done"),
                          timeout=120)
        assert standing.poll() is None

    working = re.findall(rf"🖥 {re.escape(HOST)} (\S+): trial \d+ of", status.text)
    assert sorted(working) == ["cpu:0", "cpu:0", "cpu:1", "cpu:1"], status.text
    assert "👷 Workers (2)" in workers.text, workers.text
    assert re.search(rf"{re.escape(HOST)} pid {standing.pid} · standing · working", workers.text)
    assert len(re.findall(r"cpu:\d: trial \d+ of", workers.text)) == 4, workers.text


def asked(fake: FakeTelegram, command: str, contains: str) -> SentMessage | None:
    """Send ``command``; the bot's reply if it ``contains`` the text within a few seconds."""
    before = len(fake.messages_to(ALICE))
    fake.user_sends(ALICE, command)
    deadline = time.monotonic() + scaled(5)
    while time.monotonic() < deadline:
        if reply := next((m for m in fake.messages_to(ALICE)[before:]
                          if contains in m.text_or_caption), None):
            return reply
        time.sleep(0.1)
    return None
