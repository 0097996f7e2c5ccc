"""What the bot remembers across restarts, in ``state_dir/bot_state.json``.

``delivered``  the ids of the notifications already sent (see :mod:`tuner_core.events`)
``sent_to``    for a notification sent to some of several chats so far, those chats
``chats``      the chats of allowed users who wrote to the bot (the notification
               targets when ``telegram.chat_id`` is not set)

The file is replaced atomically, so a crash mid-write leaves the previous version.
Whoever tells news (the notifier, or a command whose reply tells it, see
:meth:`BotState.sent`) holds :attr:`BotState.telling` meanwhile, so the two never
tell the same news at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from train.atomic import atomic_path

log = logging.getLogger(__name__)

STATE_FILE = "bot_state.json"


class BotState:
    """The bot's memory; changed in the event loop, written to disk in a thread."""

    def __init__(self, path: Path):
        self.path = path
        self.delivered: set[str] = set()
        self.sent_to: dict[str, set[int]] = {}
        self.chats: set[int] = set()
        self.first_start = True  # no state file was found: nothing was ever delivered
        self.telling = asyncio.Lock()  # held while news is told and recorded
        self._saving = asyncio.Lock()

    @classmethod
    def load(cls, state_dir: Path) -> BotState:
        """The saved state, or an empty one (``first_start``) when there is none yet."""
        state = cls(state_dir / STATE_FILE)
        try:
            data = json.loads(state.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return state
        except (OSError, ValueError) as error:
            # Starting over re-sends at most the news of the running studies.
            log.error("cannot read %s (%s); starting with an empty state", state.path, error)
            return state
        state.delivered = set(data.get("delivered", []))
        state.sent_to = {key: set(chats) for key, chats in data.get("sent_to", {}).items()}
        state.chats = set(data.get("chats", []))
        state.first_start = False
        return state

    async def sent(self, notification_id: str, chat_id: int) -> None:
        """Record that ``chat_id`` has had the news of ``notification_id`` in another way
        (a command's reply said it), so the notifier does not send it there again."""
        self.sent_to.setdefault(notification_id, set()).add(chat_id)
        await self.save()

    async def save(self) -> None:
        """Write the state as it is now; saves are written in the order they were asked for."""
        async with self._saving:
            # Copied here, in the loop, so the writing thread never sees a set change.
            data = {"delivered": sorted(self.delivered),
                    "sent_to": {key: sorted(chats) for key, chats in self.sent_to.items()},
                    "chats": sorted(self.chats)}
            await asyncio.to_thread(self._write, data)
        self.first_start = False

    def _write(self, data: dict[str, Any]) -> None:
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
