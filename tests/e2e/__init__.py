"""End-to-end tests: the bot against a loopback fake of the Telegram Bot API."""
