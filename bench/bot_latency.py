"""How fast the bot answers /status while a trial trains, and how late its event loop runs.

    .venv/bin/python bench/bot_latency.py [--requests 50] [--seed 0]

Runs the real ``run_bot.py`` against the project's loopback fake of the Bot API
(tests/e2e/fake_telegram.py), starts a study of the demo profile from the chat
(``/tune 1``, epochs raised so that the trial trains throughout), waits for the
trial's first validation, then sends ``/status`` ``--requests`` times, one after the
other with a short random pause. It prints, in milliseconds, the median and 95th
percentile of:

* the reply latency: from the update entering the fake to the bot's ``sendMessage``
  reaching it (long polling, the handler, and Telegram's round trip on loopback);
* the event loop's lag, seen from the fake: from the fake answering the ``getUpdates``
  that carried the ``/status`` to the bot's next ``getUpdates`` arriving (aiogram asks
  again as soon as it has handed the update to a task, so any time the loop is busy
  elsewhere shows here).

Also the time from starting ``run_bot.py`` to its answer to a first ``/status``, and the
load average. The study is stopped and the bot ended with SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml
from demo_study import ROOT, demo_corpus

from tests.e2e.fake_telegram import FakeTelegram
from tuner_core import SmartTuner

ALICE = 1001
TICK_S = 0.001  # how often the fake's records are looked at while a reply is awaited


def demo_config(folder: Path) -> Path:
    """config/demo.yaml with a trial long enough to outlast the measurement, no pruning,
    no early stopping, no MLflow (the bot's /status reads the Optuna storage only)."""
    settings = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    settings["trainer"]["hparams"]["epochs"] = 1000
    settings["optimization"]["pruner"] = {"type": "none"}
    settings.update(dataset_path=str(demo_corpus()), state_dir=str(folder), early_stopping={},
                    mlflow={"enabled": False},
                    telegram={"enabled": True, "allowed_users": [ALICE], "chat_id": ALICE})
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def replies(fake: FakeTelegram) -> int:
    return len(fake.messages_to(ALICE))


def wait(predicate: Callable[[], object], timeout: float, what: str,
         every: float = 0.1) -> float:
    """perf_counter() once ``predicate`` holds, looked at every ``every`` seconds."""
    return when({what: predicate}, timeout, every)[what]


def when(events: dict[str, Callable[[], object]], timeout: float,
         every: float = TICK_S) -> dict[str, float]:
    """perf_counter() at which each event's predicate first held; all are watched at once,
    so that one happening before another is stamped when it happens."""
    seen: dict[str, float] = {}
    deadline = time.perf_counter() + timeout
    while len(seen) < len(events):
        for what, happened in events.items():
            if what not in seen and happened():
                seen[what] = time.perf_counter()
        if time.perf_counter() > deadline:
            missing = ", ".join(what for what in events if what not in seen)
            raise TimeoutError(f"no {missing} within {timeout:.0f} s")
        time.sleep(every)
    return seen


def status_once(fake: FakeTelegram) -> tuple[float, float]:
    """Send /status; (reply latency, event loop lag) in seconds."""
    before_replies, before_polls = replies(fake), len(fake.calls_to("getUpdates"))
    sent = time.perf_counter()
    update_id = fake.user_sends(ALICE, "/status")["update_id"]
    seen = when({
        "delivered": lambda: len(fake.calls_to("getUpdates")) > before_polls,
        "asked again": lambda: all(u["update_id"] != update_id for u in fake.pending_updates),
        "reply": lambda: replies(fake) > before_replies}, timeout=30)
    return seen["reply"] - sent, seen["asked again"] - seen["delivered"]


def trial_epoch(tuner: SmartTuner) -> int:
    """The running trial's last validated epoch (0 before the first)."""
    running = tuner.status()["running"]
    return max(((trial["last_metrics"] or {}).get("epoch") or 0 for trial in running), default=0)


def milliseconds(values: list[float]) -> str:
    p95 = statistics.quantiles(values, n=20)[18]
    return (f"p50 {statistics.median(values) * 1000:6.1f} ms, p95 {p95 * 1000:6.1f} ms, "
            f"max {max(values) * 1000:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=50, help="how many /status to send")
    parser.add_argument("--seed", type=int, default=0, help="of the pauses between them")
    args = parser.parse_args()
    pauses = random.Random(args.seed)
    print(f"load average at the start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    with tempfile.TemporaryDirectory() as tmp, FakeTelegram() as fake:
        config = demo_config(Path(tmp))
        tuner = SmartTuner(config, environ={})
        fake.add_user(ALICE)
        environ = {key: value for key, value in os.environ.items()
                   if not key.startswith("TELEGRAM_")} | {"TELEGRAM_BOT_TOKEN": fake.token}
        launched = time.perf_counter()
        bot = subprocess.Popen([sys.executable, "run_bot.py", "--config", str(config),
                                "--api-server", fake.url], cwd=ROOT, env=environ,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            fake.user_sends(ALICE, "/status")
            first = wait(lambda: replies(fake), 120, "first reply", TICK_S) - launched
            print(f"first /status answered {first:.2f} s after run_bot.py started")

            fake.user_sends(ALICE, "/tune 1")
            wait(lambda: fake.find_message(ALICE, "Started study"), 120, "started study")
            wait(lambda: trial_epoch(tuner) >= 1, 600, "first validation of the trial", 2.0)
            epoch_before = trial_epoch(tuner)
            latencies, lags = [], []
            for _ in range(args.requests):
                latency, lag = status_once(fake)
                latencies.append(latency)
                lags.append(lag)
                time.sleep(pauses.uniform(0.05, 0.25))
            print(f"/status x{args.requests} while trial 0 trained (epoch {epoch_before} to "
                  f"{trial_epoch(tuner)}):")
            print(f"  reply latency    {milliseconds(latencies)}")
            print(f"  event loop lag   {milliseconds(lags)}")
            print(f"load average at the end: {os.getloadavg()[0]:.2f}")
            tuner.request_stop(by="bench")
            wait(lambda: tuner.status()["state"] == "finished", 120, "end of the study", 1.0)
        finally:
            bot.send_signal(signal.SIGTERM)
            bot.wait(timeout=30)


if __name__ == "__main__":
    main()
