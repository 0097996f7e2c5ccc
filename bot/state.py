"""What the bot remembers across restarts, in ``state_dir/bot_state.json``, and the lock
that keeps a second bot off the same state folder.

``delivered``  the ids of the notifications already sent (see :mod:`tuner_core.reporting.events`)
``sent_to``    for a notification sent to some of several chats so far, those chats
``sending``    the notification being sent: its id, the chat, how many of its
               messages (text pieces, then the photo) Telegram has confirmed there, and
               whether the next one is in doubt (its request went out, no answer came)
``chats``      the private chats of allowed users who wrote to the bot (the
               notification targets when ``telegram.chat_id`` is not set)

The file is replaced atomically, so a crash mid-write leaves the previous version. It
is written in the event loop itself, not in a thread: a save must follow Telegram's
confirmation at once, not wait behind the storage reads and plots in the threads.
Whoever tells news (the notifier, or a command whose reply tells it, see
:meth:`BotState.sent`) holds :attr:`BotState.telling` meanwhile, so the two never
tell the same news at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from train.tacotron2.atomic import atomic_path

log = logging.getLogger(__name__)

STATE_FILE = "bot_state.json"
LOCK_FILE = "bot.lock"


class StateFolderInUse(RuntimeError):
    """Another bot runs on this state folder; the message says which."""


@contextlib.contextmanager
def hold_state_folder(state_dir: Path) -> Iterator[None]:
    """Hold ``state_dir/bot.lock`` for the block; :class:`StateFolderInUse` if another
    process holds it.

    Two bots on one state folder would both answer every command and both send every
    notification. The lock is an ``flock``, which the system releases when the process
    ends however it ends (even SIGKILL), so a killed bot never blocks its restart. The
    file names the holder's pid; its descriptor is not inherited by the workers the bot
    starts (Python opens files non-inheritable).
    """
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / LOCK_FILE
    with open(path, "a+", encoding="utf-8") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise StateFolderInUse(
                f"another bot (pid {holder}) is running on the state folder {state_dir}; "
                "stop it first (one bot per state folder)") from None
        lock.truncate(0)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield


class BotState:
    """The bot's memory; changed and written to disk in the event loop."""

    def __init__(self, path: Path):
        self.path = path
        self.delivered: set[str] = set()
        self.sent_to: dict[str, set[int]] = {}
        self.sending: tuple[str, int, int, bool] | None = None
        self.chats: set[int] = set()
        self.first_start = True  # no state file was found: nothing was ever delivered
        self.telling = asyncio.Lock()  # held while news is told and recorded

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
        if sending := data.get("sending"):
            notification_id, chat_id, confirmed, *in_doubt = sending  # older files: 3
            state.sending = (notification_id, chat_id, confirmed, bool(in_doubt and in_doubt[0]))
        state.chats = set(data.get("chats", []))
        state.first_start = False
        return state

    def progress(self, notification_id: str, chat_id: int) -> tuple[int, bool]:
        """How many messages of ``notification_id`` Telegram has confirmed in ``chat_id``
        (of a notification not completely sent there yet), and whether the next one is
        in doubt: a bot stopped while its request was out, so it may have arrived."""
        if self.sending is not None and self.sending[:2] == (notification_id, chat_id):
            return self.sending[2], self.sending[3]
        return 0, False

    def attempting(self, notification_id: str, chat_id: int, number: int) -> None:
        """Record, before its request goes out, that message ``number`` (from 1) of
        ``notification_id`` is being sent to ``chat_id``; save at once."""
        self.sending = (notification_id, chat_id, number - 1, True)
        self.save()

    def answered(self, notification_id: str, chat_id: int, number: int,
                 arrived: bool) -> None:
        """Record Telegram's answer to message ``number``: it ``arrived``, or it was
        refused (an error answer: nothing was sent); save at once."""
        self.sending = (notification_id, chat_id, number if arrived else number - 1, False)
        self.save()

    def sent(self, notification_id: str, chat_id: int) -> None:
        """Record that ``chat_id`` has had all of ``notification_id``, sent by the
        notifier or in another way (a command's reply said it), and save at once."""
        self.sent_to.setdefault(notification_id, set()).add(chat_id)
        if self.sending is not None and self.sending[:2] == (notification_id, chat_id):
            self.sending = None
        self.save()

    def save(self) -> None:
        """Write the state as it is now."""
        data = {"delivered": sorted(self.delivered),
                "sent_to": {key: sorted(chats) for key, chats in self.sent_to.items()},
                "sending": self.sending,
                "chats": sorted(self.chats)}
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
        self.first_start = False
