"""Run the Smart Tuner Telegram bot.

    smart-tuner-bot [--config config/smart_tuner.yaml] [--api-server URL]
    (or, from a checkout: python run_bot.py ..., python -m bot ...)

The token comes from TELEGRAM_BOT_TOKEN, the users allowed to command the bot from
TELEGRAM_ALLOWED_USERS (comma-separated user IDs) and, optionally, the chat that gets
the notifications from TELEGRAM_CHAT_ID. Stop it with Ctrl-C or SIGTERM: running
studies go on in their worker processes, and a restarted bot picks up where it left off.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from bot.app import (
    AnotherBot,
    SettingsError,
    check_settings,
    hide_token_from_children,
    redact_token_in_logs,
    run,
)
from bot.state import StateFolderInUse
from train.arguments import program_name
from tuner_core import SmartTuner
from tuner_core.config import CONFIG_HELP, ConfigError, default_config_path
from tuner_core.logs import setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=program_name("bot"), description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=default_config_path(), help=CONFIG_HELP)
    parser.add_argument("--api-server", metavar="URL",
                        help="base URL of another Bot API server (a local one, a test fake)")
    parser.add_argument("--verbose", action="store_true", help="log debug messages too")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        tuner = SmartTuner(args.config)
        token = check_settings(tuner.config)
    except (ConfigError, SettingsError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    hide_token_from_children()
    setup_logging(tuner.config.state_dir, name="bot", verbose=args.verbose)
    if not args.verbose:  # APScheduler logs every run of a job at INFO: two lines a poll
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
    redact_token_in_logs(token)
    try:
        asyncio.run(run(tuner, token, args.api_server))
    except (StateFolderInUse, AnotherBot) as error:  # to the console and the log
        logging.getLogger("bot").error("%s", error)
        return 1
    except Exception:  # logged through the redacting handlers, never printed raw
        logging.getLogger("bot").exception("the bot stopped on an error")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
