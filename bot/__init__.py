"""The Smart Tuner Telegram bot: a thin async control plane over :mod:`tuner_core`.

``python run_bot.py`` runs it; :mod:`bot.app` assembles it from the parts below.

=============  =================================================================
service        the async facade over ``SmartTuner``: every decision, in threads
messages       every text the bot sends (HTML), and Telegram's length limits
keyboards      inline buttons and their callback data
handlers/      one router per command, thin: service → messages → Telegram
middlewares    the allow-list, chat memory, retries of Bot API requests
notifier       study news from the storage to the chat, each once, in order
jobs           the APScheduler jobs that drive the notifier
state          what the bot remembers across restarts (bot_state.json)
=============  =================================================================
"""
