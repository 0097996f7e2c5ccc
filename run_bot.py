"""Run the Smart Tuner Telegram bot from a checkout: ``python run_bot.py --help``.

The same as ``python -m bot`` or the installed ``smart-tuner-bot``; see bot/__main__.py.
"""

import sys

from bot.__main__ import main

if __name__ == "__main__":
    sys.exit(main())
