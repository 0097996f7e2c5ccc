"""A loopback fake of the Telegram Bot API, for running the real bot against it.

`FakeTelegram` is an aiohttp server on 127.0.0.1 (a random free port) that speaks the HTTP Bot
API the way aiogram uses it: `POST {url}/bot{token}/{method}` with url-encoded or multipart form
data, nested fields JSON-encoded, uploads as multipart parts referenced by `attach://name`, and
answers in Telegram's envelope (`{"ok": true, "result": ...}` or `{"ok": false, "error_code": ...,
"description": ...}`). Point aiogram at it with
`AiohttpSession(api=TelegramAPIServer.from_base(fake.url))`; the bot code runs unchanged.

Methods: getMe, deleteWebhook, getUpdates (long polling with offset, limit, timeout,
allowed_updates), setMyCommands, getMyCommands, sendMessage, sendPhoto, sendDocument, sendAudio,
sendVoice (OGG/Opus only), editMessageText, editMessageCaption, editMessageReplyMarkup,
deleteMessage, sendChatAction, answerCallbackQuery. Any other method answers 404; a token
other than the server's answers 401.
Telegram's rules are enforced with its error descriptions: text 1..4096 and caption ..1024
characters after HTML parsing (parse_mode HTML only), malformed HTML, callback_data 1..64 bytes,
"message is not modified", unknown chats, messages and callback queries, invalid photos.

Running it:
    async with FakeTelegram() as fake: ...   # in the current event loop (bot in the same loop)
    with FakeTelegram() as fake: ...         # in a background thread with its own loop
                                             # (bot in a subprocess, another loop or thread)

Test controls (thread-safe; callable from any thread or loop):
    fake.url, fake.token, fake.bot_user
    fake.add_user(user_id, first_name=None, username=None) -> chat   # register a private chat
    fake.add_group(chat_id, title="Test group") -> chat
    fake.user_sends(user_id, text, chat_id=None) -> update           # a `message` update
    fake.user_presses(user_id, message, callback_data) -> update     # a `callback_query` update
    fake.sent -> [SentMessage]             every bot message, current version, deleted included
    fake.messages_to(chat_id) -> [SentMessage]                # not deleted, oldest first
    fake.find_message(chat_id, contains) -> SentMessage | None  # newest whose text has it
    fake.calls -> [ApiCall]; fake.calls_to(method) -> [ApiCall]
    fake.updates -> [update]; fake.pending_updates -> [update]  # all / not yet confirmed
    fake.fail_next(n=1, status=429, retry_after=1, methods=None)  # methods=None includes the
    fake.fail_for(seconds, status=502, retry_after=1, methods=None)  # bot's getUpdates polls
    fake.failures_served -> int
    fake.wait_for(predicate, timeout=5.0)               # blocking poll; returns the truthy value
    await fake.wait_for_async(predicate, timeout=5.0)   # the same, for code in the bot's loop
                                                        # (both timeouts pass through scaled())
"""

from __future__ import annotations

import asyncio
import copy
import io
import json
import mimetypes
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any, TypeVar

from aiohttp import web
from PIL import Image, UnidentifiedImageError

from tests.deadlines import scaled

TEST_TOKEN = "123456789:AAFakeTelegramTokenForSmartTuner000"
MAX_TEXT_LENGTH = 4096
MAX_CAPTION_LENGTH = 1024
MAX_CALLBACK_DATA_BYTES = 64
MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # Telegram's limit for files sent by bots

# Nested parameters that clients send JSON-encoded inside form fields.
JSON_PARAMETERS = frozenset({
    "reply_markup", "commands", "scope", "allowed_updates", "entities", "caption_entities",
    "link_preview_options", "reply_parameters",
})
# Update types Telegram leaves out unless a bot asks for them in allowed_updates.
NOT_SENT_BY_DEFAULT = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
CHAT_ACTIONS = frozenset({
    "typing", "upload_photo", "record_video", "upload_video", "record_voice", "upload_voice",
    "upload_document", "choose_sticker", "find_location", "record_video_note",
    "upload_video_note",
})
BUTTON_ACTIONS = frozenset({
    "callback_data", "url", "web_app", "login_url", "switch_inline_query",
    "switch_inline_query_current_chat", "switch_inline_query_chosen_chat", "copy_text",
    "callback_game", "pay",
})
BOT_COMMAND = re.compile(r"(?<!\S)/[A-Za-z0-9_]+(?:@[A-Za-z0-9_]+)?")

QUERY_INVALID = "query is too old and response timeout expired or query ID is invalid"
NOT_MODIFIED = (
    "message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
CONFLICT = (
    "Conflict: terminated by other getUpdates request; "
    "make sure that only one bot instance is running"
)

T = TypeVar("T")


class ApiError(Exception):
    """A Telegram error answer: HTTP status, description and optional retry_after."""

    def __init__(self, status: int, description: str, retry_after: int | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.retry_after = retry_after

    def envelope(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "ok": False, "error_code": self.status, "description": self.description,
        }
        if self.retry_after is not None:
            body["parameters"] = {"retry_after": self.retry_after}
        return body


def bad_request(reason: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, f"Bad Request: {reason}")


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Upload:
    """One file part of a multipart request, as received."""

    filename: str
    content: bytes
    content_type: str


@dataclass(frozen=True)
class TelegramFile:
    """A file the bot uploaded; re-sendable by its file_id."""

    kind: str  # photo, document, audio or voice
    file_id: str
    file_unique_id: str
    filename: str
    content: bytes
    mime_type: str
    dimensions: tuple[int, int] | None = None  # photos: (width, height)
    duration: int = 0  # audio and voice: seconds, as the bot declared

    def to_json(self) -> dict[str, Any] | list[dict[str, Any]]:
        ids = {
            "file_id": self.file_id,
            "file_unique_id": self.file_unique_id,
            "file_size": len(self.content),
        }
        if self.kind == "photo":
            assert self.dimensions is not None
            width, height = self.dimensions
            return [{**ids, "width": width, "height": height}]
        described = {**ids, "file_name": self.filename, "mime_type": self.mime_type}
        if self.kind in ("audio", "voice"):
            return {**described, "duration": self.duration}
        return described


@dataclass(frozen=True)
class Revision:
    """A bot message's content before an edit."""

    text: str | None
    caption: str | None
    entities: tuple[dict[str, Any], ...]
    reply_markup: dict[str, Any] | None


@dataclass(frozen=True)
class SentMessage:
    """A message the bot sent, in its current version; earlier versions are in `revisions`."""

    method: str
    chat_id: int
    message_id: int
    date: int
    text: str | None = None  # plain text, HTML tags parsed into `entities`
    caption: str | None = None
    entities: tuple[dict[str, Any], ...] = ()  # of the text or of the caption
    reply_markup: dict[str, Any] | None = None  # as sent: inline keyboard or reply keyboard
    file: TelegramFile | None = None
    revisions: tuple[Revision, ...] = ()  # oldest first
    edit_date: int | None = None
    deleted: bool = False

    @property
    def text_or_caption(self) -> str:
        return self.text if self.text is not None else (self.caption or "")

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """The inline keyboard's buttons, row by row."""
        rows = (self.reply_markup or {}).get("inline_keyboard", [])
        return [button for row in rows for button in row]

    def button_data(self, label: str) -> str:
        """The callback_data of the inline button with this label."""
        for button in self.buttons:
            if button.get("text") == label and "callback_data" in button:
                return button["callback_data"]
        labels = [button.get("text") for button in self.buttons]
        raise KeyError(f"message {self.message_id} has no callback button {label!r}: {labels}")

    def revision(self) -> Revision:
        return Revision(self.text, self.caption, self.entities, self.reply_markup)

    def inline_markup(self) -> dict[str, Any] | None:
        """What Telegram attaches to the message: only inline keyboards stay with it."""
        if self.reply_markup and "inline_keyboard" in self.reply_markup:
            return self.reply_markup
        return None


@dataclass(frozen=True)
class ApiCall:
    """One request the bot made, with its decoded parameters and the answer's status."""

    method: str
    params: dict[str, Any]  # strings; JSON_PARAMETERS decoded; file parts as Upload
    status: int = HTTPStatus.OK
    description: str | None = None  # the error description when status is not 200


@dataclass
class _FailurePlan:
    """Injected failures: `remaining` calls, or all calls until `until` (monotonic)."""

    status: int
    retry_after: int
    methods: frozenset[str] | None
    remaining: int = 0
    until: float = 0.0

    def applies_to(self, method: str, now: float) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.remaining > 0 or now < self.until

    def error(self) -> ApiError:
        if self.status == HTTPStatus.TOO_MANY_REQUESTS:
            return ApiError(
                self.status, f"Too Many Requests: retry after {self.retry_after}", self.retry_after
            )
        return ApiError(self.status, HTTPStatus(self.status).phrase)


# ----------------------------------------------------------------------------- formatting


HTML_TAG_ENTITIES = {
    "b": "bold", "strong": "bold", "i": "italic", "em": "italic", "u": "underline",
    "ins": "underline", "s": "strikethrough", "strike": "strikethrough",
    "del": "strikethrough", "tg-spoiler": "spoiler", "code": "code", "pre": "pre",
    "a": "text_link", "blockquote": "blockquote",
}
HTML_TAG_NAME = re.compile(r"[^\s>]*")
HTML_NAMED_CHARACTERS = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
HTML_CHARACTER_REFERENCE = re.compile(r"&(lt|gt|amp|quot|#[0-9]+|#[xX][0-9a-fA-F]+);")
HTML_HREF = re.compile(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"']+))""", re.IGNORECASE)


def utf16_length(text: str) -> int:
    """Telegram measures entity offsets and lengths in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def unescape_html(fragment: str) -> str:
    """Decode the character references Telegram knows; leave any other '&' as it is."""

    def character(match: re.Match[str]) -> str:
        name = match[1]
        if name in HTML_NAMED_CHARACTERS:
            return HTML_NAMED_CHARACTERS[name]
        code = int(name[2:], 16) if name[1] in "xX" else int(name[1:])
        return chr(code) if code <= 0x10FFFF else match[0]

    return HTML_CHARACTER_REFERENCE.sub(character, fragment)


def parse_html(markup: str) -> tuple[str, list[dict[str, Any]]]:
    """Telegram's HTML parse mode: the plain text and its entities.

    Raises ValueError with Telegram's reason for unsupported, unclosed or mismatched tags.
    Simplification: a '>' inside an attribute value ends the tag.
    """
    text: list[str] = []
    length = 0  # of the text so far, in UTF-16 code units
    open_tags: list[tuple[str, int, str | None]] = []  # (tag, text offset, link)
    entities: list[dict[str, Any]] = []
    position = 0

    def add_text(raw: str) -> None:
        nonlocal length
        plain = unescape_html(raw)
        text.append(plain)
        length += utf16_length(plain)

    while (start := markup.find("<", position)) != -1:
        add_text(markup[position:start])
        byte_offset = len(markup[:start].encode())
        closing = markup.startswith("/", start + 1)
        if closing and not open_tags:
            raise ValueError(f"Unexpected end tag at byte offset {byte_offset}")
        name_match = HTML_TAG_NAME.match(markup, start + 1 + closing)
        name = name_match[0].lower()
        if name_match.end() < len(markup) and not closing and name not in HTML_TAG_ENTITIES:
            raise ValueError(f'Unsupported start tag "{name}" at byte offset {byte_offset}')
        end = markup.find(">", name_match.end())
        if end == -1:
            raise ValueError(f"Unclosed start tag at byte offset {byte_offset}")
        if closing:
            tag, offset, link = open_tags.pop()
            if name and name != tag:
                raise ValueError(
                    f'Unmatched end tag at byte offset {byte_offset}, '
                    f'expected "</{tag}>", found "</{name}>"'
                )
            # Empty entities and links without an address are dropped, as Telegram does.
            if length > offset and (tag != "a" or link):
                entity = {"type": HTML_TAG_ENTITIES[tag], "offset": offset,
                          "length": length - offset}
                if link:
                    entity["url"] = link
                entities.append(entity)
        else:
            link = None
            attributes = markup[name_match.end() : end]
            if name == "a" and (href := HTML_HREF.search(attributes)):
                link = unescape_html(next(group for group in href.groups() if group is not None))
            open_tags.append((name, length, link))
        position = end + 1
    add_text(markup[position:])
    if open_tags:
        raise ValueError(f'Can\'t find end tag corresponding to start tag "{open_tags[-1][0]}"')
    entities.sort(key=lambda entity: entity["offset"])
    return "".join(text), entities


def command_entities(text: str) -> list[dict[str, Any]]:
    """The bot_command entities Telegram marks in a user's text."""
    return [
        {"type": "bot_command", "offset": utf16_length(text[: match.start()]),
         "length": utf16_length(match[0])}
        for match in BOT_COMMAND.finditer(text)
    ]


# ----------------------------------------------------------------------------- parameters


def _int(params: dict[str, Any], name: str, default: int | None = None) -> int | None:
    raw = params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise bad_request(f"invalid {name} specified: {raw!r}") from None


def _flag(params: dict[str, Any], name: str) -> bool:
    return str(params.get(name, "")).lower() in ("true", "1")


def formatted(params: dict[str, Any], text_key: str, entities_key: str) -> tuple[str, list]:
    """The plain text of a text or caption parameter and its entities, per parse_mode."""
    raw = params.get(text_key) or ""
    parse_mode = params.get("parse_mode") or ""
    if not parse_mode:
        return raw, list(params.get(entities_key) or [])
    if parse_mode.lower() != "html":
        raise bad_request(
            f"unsupported parse_mode {parse_mode!r} (the fake Telegram server implements HTML)"
        )
    try:
        return parse_html(raw)
    except ValueError as error:
        raise bad_request(f"can't parse entities: {error}") from None


def checked_markup(params: dict[str, Any]) -> dict[str, Any] | None:
    """The reply_markup parameter, after Telegram's checks of inline keyboards."""
    markup = params.get("reply_markup")
    if markup is None:
        return None
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(markup, dict) or ("inline_keyboard" in markup and not (
        isinstance(rows, list) and all(isinstance(row, list) for row in rows)
    )):
        raise bad_request("can't parse reply keyboard markup JSON object")
    for row in rows or []:
        for button in row:
            if not isinstance(button, dict) or not BUTTON_ACTIONS & button.keys():
                raise bad_request(
                    "can't parse inline keyboard button: "
                    "Text buttons are unallowed in the inline keyboard"
                )
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= MAX_CALLBACK_DATA_BYTES:
                raise bad_request("BUTTON_DATA_INVALID")
    return markup


async def read_params(request: web.Request) -> dict[str, Any]:
    """Query and form fields of a Bot API request; file parts become Upload."""
    params: dict[str, Any] = dict(request.query)
    try:
        form = await request.post()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request Entity Too Large") from None
    for name, value in form.items():
        if isinstance(value, web.FileField):
            params[name] = Upload(value.filename, value.file.read(), value.content_type)
        else:
            params[name] = value
    for name in JSON_PARAMETERS & params.keys():
        try:
            params[name] = json.loads(params[name])
        except (TypeError, ValueError):
            raise bad_request(f"can't parse {name} JSON object") from None
    return params


def _resolve_poll(waiter: asyncio.Future[str], outcome: str) -> None:
    if not waiter.done():
        waiter.set_result(outcome)


# ----------------------------------------------------------------------------- the server


class FakeTelegram:
    """The fake Bot API server for one bot token; see the module docstring for its controls."""

    def __init__(self, token: str = TEST_TOKEN, bot_username: str = "smart_tuner_test_bot") -> None:
        bot_id, _, secret = token.partition(":")
        if not (bot_id.isdigit() and secret):
            raise ValueError(f"not a bot token (digits ':' secret): {token!r}")
        self.token = token
        self.bot_user: dict[str, Any] = {
            "id": int(bot_id), "is_bot": True, "first_name": "Smart Tuner (fake)",
            "username": bot_username, "can_join_groups": True,
            "can_read_all_group_messages": False, "supports_inline_queries": False,
        }
        self._lock = threading.Lock()
        self._users: dict[int, dict[str, Any]] = {}
        self._chats: dict[int, dict[str, Any]] = {}
        self._last_message_id: dict[int, int] = {}
        self._user_messages: set[tuple[int, int]] = set()
        self._sent: list[SentMessage] = []
        self._sent_index: dict[tuple[int, int], int] = {}
        self._files: dict[str, TelegramFile] = {}
        self._commands: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self._open_queries: set[str] = set()
        self._updates: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._last_update_id = 100_000
        self._allowed_updates: frozenset[str] | None = None  # None: Telegram's default set
        self._pollers: set[asyncio.Future[str]] = set()
        self._calls: list[ApiCall] = []
        self._failure_plans: list[_FailurePlan] = []
        self._failures_served = 0
        self._closing = False
        self._handlers: dict[str, Callable[[dict[str, Any]], Any]] = {
            "getMe": lambda params: self.bot_user,
            "deleteWebhook": self._delete_webhook,
            "setMyCommands": self._set_my_commands,
            "getMyCommands": self._get_my_commands,
            "sendMessage": self._send_message,
            "sendPhoto": lambda params: self._send_media(params, "photo"),
            "sendDocument": lambda params: self._send_media(params, "document"),
            "sendAudio": lambda params: self._send_media(params, "audio"),
            "sendVoice": lambda params: self._send_media(params, "voice"),
            "editMessageText": self._edit_message_text,
            "editMessageCaption": self._edit_message_caption,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
            "deleteMessage": self._delete_message,
            "sendChatAction": self._send_chat_action,
            "answerCallbackQuery": self._answer_callback_query,
        }
        # Telegram matches method names case-insensitively.
        self._method_names = {name.lower(): name for name in [*self._handlers, "getUpdates"]}
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._thread_loop: asyncio.AbstractEventLoop | None = None
        self._thread_stop: asyncio.Event | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The base URL, for TelegramAPIServer.from_base()."""
        if self._port is None:
            raise RuntimeError("the fake Telegram server is not running")
        return f"http://127.0.0.1:{self._port}"

    async def start(self) -> None:
        """Serve in the running event loop."""
        self._closing = False
        app = web.Application(client_max_size=MAX_UPLOAD_BYTES)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        # Cancel a handler whose client went away, so a dropped long poll stops waiting.
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, handler_cancellation=True
        )
        await self._runner.setup()
        listener = socket.create_server(("127.0.0.1", 0))
        self._port = listener.getsockname()[1]
        await web.SockSite(self._runner, listener).start()

    async def stop(self) -> None:
        """Release waiting long polls and stop serving."""
        with self._lock:
            self._closing = True
            self._wake_pollers("closing")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def start_in_thread(self) -> FakeTelegram:
        """Serve from a background thread with its own event loop."""
        started = threading.Event()
        startup_errors: list[BaseException] = []

        async def serve() -> None:
            self._thread_loop = asyncio.get_running_loop()
            self._thread_stop = asyncio.Event()
            try:
                await self.start()
            except Exception as error:
                startup_errors.append(error)
                return
            finally:
                started.set()
            try:
                await self._thread_stop.wait()
            finally:
                await self.stop()

        self._thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True,
                                        name="fake-telegram")
        self._thread.start()
        started.wait()
        if startup_errors:
            raise startup_errors[0]
        return self

    def stop_thread(self) -> None:
        """Stop the server started by start_in_thread() and wait for its thread."""
        if self._thread is None or self._thread_loop is None or self._thread_stop is None:
            raise RuntimeError("the fake Telegram server was not started with start_in_thread()")
        self._thread_loop.call_soon_threadsafe(self._thread_stop.set)
        self._thread.join()
        self._thread = None

    def __enter__(self) -> FakeTelegram:
        return self.start_in_thread()

    def __exit__(self, *exc_info: object) -> None:
        self.stop_thread()

    # ------------------------------------------------------------------ test controls

    def add_user(
        self, user_id: int, first_name: str | None = None, username: str | None = None
    ) -> dict[str, Any]:
        """Register a user and their private chat (chat id == user id); returns the chat."""
        with self._lock:
            return copy.deepcopy(self._add_user(user_id, first_name, username))

    def add_group(self, chat_id: int, title: str = "Test group") -> dict[str, Any]:
        """Register a group chat the bot is a member of; returns the chat."""
        if chat_id >= 0:
            raise ValueError(f"group chat ids are negative, got {chat_id}")
        with self._lock:
            chat = self._chats.setdefault(chat_id, {"id": chat_id, "type": "group",
                                                    "title": title})
            return copy.deepcopy(chat)

    def user_sends(self, user_id: int, text: str, chat_id: int | None = None) -> dict[str, Any]:
        """A user writes `text` (in their private chat unless chat_id); returns the update."""
        with self._lock:
            user = self._users.get(user_id) or self._known_user(user_id)
            chat_id = user_id if chat_id is None else chat_id
            if chat_id not in self._chats:
                raise ValueError(f"chat {chat_id} is unknown: register it with add_group()")
            message: dict[str, Any] = {
                "message_id": self._next_message_id(chat_id), "from": user,
                "chat": self._chats[chat_id], "date": int(time.time()), "text": text,
            }
            if entities := command_entities(text):
                message["entities"] = entities
            self._user_messages.add((chat_id, message["message_id"]))
            return self._enqueue({"message": message})

    def user_presses(
        self, user_id: int, message: SentMessage, callback_data: str
    ) -> dict[str, Any]:
        """A user presses the inline button with `callback_data` under a bot message."""
        with self._lock:
            user = self._users.get(user_id) or self._known_user(user_id)
            current = self._current(message.chat_id, message.message_id)
            if current is None or current.deleted:
                raise ValueError(f"message {message.message_id} in chat {message.chat_id} "
                                 "does not exist (never sent or deleted)")
            offered = [button.get("callback_data") for button in current.buttons]
            if callback_data not in offered:
                raise ValueError(f"message {current.message_id} in chat {current.chat_id} has "
                                 f"no button with callback_data {callback_data!r}: {offered}")
            query_id = str(self._last_update_id + 1)
            self._open_queries.add(query_id)
            return self._enqueue({"callback_query": {
                "id": query_id, "from": user, "message": self._message_json(current),
                "chat_instance": str(current.chat_id), "data": callback_data,
            }})

    @property
    def sent(self) -> list[SentMessage]:
        with self._lock:
            return list(self._sent)

    def messages_to(self, chat_id: int) -> list[SentMessage]:
        """The bot's messages in a chat that are not deleted, oldest first."""
        return [m for m in self.sent if m.chat_id == chat_id and not m.deleted]

    def find_message(self, chat_id: int, contains: str) -> SentMessage | None:
        """The newest visible bot message in a chat whose text or caption contains a fragment."""
        matching = [m for m in self.messages_to(chat_id) if contains in m.text_or_caption]
        return matching[-1] if matching else None

    @property
    def calls(self) -> list[ApiCall]:
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[ApiCall]:
        return [call for call in self.calls if call.method == method]

    @property
    def updates(self) -> list[dict[str, Any]]:
        """Every update created, confirmed or not."""
        with self._lock:
            return copy.deepcopy(self._updates)

    @property
    def pending_updates(self) -> list[dict[str, Any]]:
        """Updates the bot has not confirmed with getUpdates' offset yet."""
        with self._lock:
            return copy.deepcopy(self._pending)

    def fail_next(
        self, n: int = 1, status: int = HTTPStatus.TOO_MANY_REQUESTS, retry_after: int = 1,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Answer the next n calls (of `methods`, if given) with an error of this status."""
        plan = _FailurePlan(status, retry_after, self._method_filter(methods), remaining=n)
        with self._lock:
            self._failure_plans.append(plan)

    def fail_for(
        self, seconds: float, status: int = HTTPStatus.BAD_GATEWAY, retry_after: int = 1,
        methods: Iterable[str] | None = None,
    ) -> None:
        """Answer every call (of `methods`, if given) with an error for the next `seconds`."""
        plan = _FailurePlan(status, retry_after, self._method_filter(methods),
                            until=time.monotonic() + seconds)
        with self._lock:
            self._failure_plans.append(plan)

    @property
    def failures_served(self) -> int:
        with self._lock:
            return self._failures_served

    def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """Poll `predicate` until it returns something truthy; return that. Blocks the thread.

        `timeout` is scaled by tests.deadlines, as every test deadline is."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while not (outcome := predicate()):
            if time.monotonic() > deadline:
                raise TimeoutError(self._timeout_report(timeout))
            time.sleep(0.02)
        return outcome

    async def wait_for_async(self, predicate: Callable[[], T], timeout: float = 5.0) -> T:
        """wait_for() that yields to the event loop, for tests running the bot in their loop."""
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while not (outcome := predicate()):
            if time.monotonic() > deadline:
                raise TimeoutError(self._timeout_report(timeout))
            await asyncio.sleep(0.02)
        return outcome

    # ------------------------------------------------------------------ HTTP

    async def _handle(self, request: web.Request) -> web.Response:
        requested = request.match_info["method"]
        method = self._method_names.get(requested.lower(), requested)
        params: dict[str, Any] = {}
        try:
            if request.match_info["token"] != self.token:
                raise ApiError(HTTPStatus.UNAUTHORIZED, "Unauthorized")
            if requested.lower() not in self._method_names:
                raise ApiError(HTTPStatus.NOT_FOUND, "Not Found: method not found")
            params = await read_params(request)
            self._raise_injected_failure(method)
            if method == "getUpdates":  # the one method that waits
                result = await self._get_updates(params)
            else:
                with self._lock:
                    result = self._handlers[method](params)
        except ApiError as error:
            self._record(ApiCall(method, params, error.status, error.description))
            return web.json_response(error.envelope(), status=error.status)
        self._record(ApiCall(method, params))
        return web.json_response({"ok": True, "result": result})

    def _record(self, call: ApiCall) -> None:
        with self._lock:
            self._calls.append(call)

    def _raise_injected_failure(self, method: str) -> None:
        with self._lock:
            now = time.monotonic()
            self._failure_plans = [
                plan for plan in self._failure_plans if plan.remaining > 0 or now < plan.until
            ]
            for plan in self._failure_plans:
                if plan.applies_to(method, now):
                    plan.remaining = max(plan.remaining - 1, 0)
                    self._failures_served += 1
                    raise plan.error()

    def _method_filter(self, methods: Iterable[str] | None) -> frozenset[str] | None:
        if methods is None:
            return None
        chosen = frozenset(methods)
        if unknown := chosen - set(self._method_names.values()):
            raise ValueError(f"the fake Telegram server has no method {sorted(unknown)}")
        return chosen

    def _timeout_report(self, timeout: float) -> str:
        recent_messages = [(m.chat_id, m.text_or_caption[:80]) for m in self.sent[-5:]]
        recent_calls = [(c.method, c.status, c.description) for c in self.calls[-5:]]
        return (f"condition not met within {timeout:.1f} s; last bot messages: {recent_messages}; "
                f"last API calls: {recent_calls}")

    # ------------------------------------------------------------------ updates

    def _enqueue(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Add an update (lock held) and wake a waiting long poll."""
        self._last_update_id += 1
        update = {"update_id": self._last_update_id, **payload}
        self._updates.append(update)
        self._pending.append(update)
        self._wake_pollers("update")
        return copy.deepcopy(update)

    def _wake_pollers(self, outcome: str) -> None:
        for waiter in self._pollers:
            waiter.get_loop().call_soon_threadsafe(_resolve_poll, waiter, outcome)
        self._pollers.clear()

    def _deliverable(self, limit: int) -> list[dict[str, Any]]:
        """Pending updates of allowed types (lock held); others are dropped, as Telegram does."""
        def allowed(update: dict[str, Any]) -> bool:
            kind = next(key for key in update if key != "update_id")
            if self._allowed_updates is None:
                return kind not in NOT_SENT_BY_DEFAULT
            return kind in self._allowed_updates

        self._pending = [update for update in self._pending if allowed(update)]
        return copy.deepcopy(self._pending[:limit])

    async def _get_updates(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        offset = _int(params, "offset", 0)
        limit = min(max(_int(params, "limit", 100), 1), 100)
        timeout = max(_int(params, "timeout", 0), 0)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with self._lock:
            # A newer getUpdates ends any still waiting, as on Telegram.
            self._wake_pollers("conflict")
            if "allowed_updates" in params:
                self._allowed_updates = frozenset(params["allowed_updates"]) or None
            if offset < 0:
                self._pending = self._pending[offset:]
            elif offset > 0:
                self._pending = [u for u in self._pending if u["update_id"] >= offset]
        while True:
            with self._lock:
                batch = self._deliverable(limit)
                remaining = deadline - loop.time()
                if batch or self._closing or remaining <= 0:
                    return batch
                waiter: asyncio.Future[str] = loop.create_future()
                self._pollers.add(waiter)
            try:
                outcome = await asyncio.wait_for(waiter, remaining)
            except TimeoutError:
                outcome = "timeout"
            finally:
                with self._lock:
                    self._pollers.discard(waiter)
            if outcome == "conflict":
                raise ApiError(HTTPStatus.CONFLICT, CONFLICT)

    def _delete_webhook(self, params: dict[str, Any]) -> bool:
        if _flag(params, "drop_pending_updates"):
            self._pending.clear()
        return True

    # ------------------------------------------------------------------ chats and users

    def _add_user(
        self, user_id: int, first_name: str | None, username: str | None
    ) -> dict[str, Any]:
        if user_id <= 0:
            raise ValueError(f"user ids are positive, got {user_id}")
        user = self._users.setdefault(user_id, {
            "id": user_id, "is_bot": False, "first_name": first_name or f"User{user_id}",
            "username": username or f"user{user_id}", "language_code": "en",
        })
        return self._chats.setdefault(user_id, {
            "id": user_id, "type": "private", "first_name": user["first_name"],
            "username": user["username"],
        })

    def _known_user(self, user_id: int) -> dict[str, Any]:
        """A user first seen in a test action is registered on the spot (lock held)."""
        self._add_user(user_id, None, None)
        return self._users[user_id]

    def _chat_id(self, params: dict[str, Any]) -> int:
        if params.get("chat_id") in (None, ""):
            raise bad_request("chat_id is empty")
        try:
            chat_id = int(params["chat_id"])
        except ValueError:
            raise bad_request("chat not found") from None
        if chat_id not in self._chats:
            raise bad_request("chat not found")
        return chat_id

    def _next_message_id(self, chat_id: int) -> int:
        self._last_message_id[chat_id] = self._last_message_id.get(chat_id, 0) + 1
        return self._last_message_id[chat_id]

    # ------------------------------------------------------------------ messages

    def _current(self, chat_id: int, message_id: int) -> SentMessage | None:
        index = self._sent_index.get((chat_id, message_id))
        return None if index is None else self._sent[index]

    def _store(self, message: SentMessage) -> dict[str, Any]:
        key = (message.chat_id, message.message_id)
        if key in self._sent_index:
            self._sent[self._sent_index[key]] = message
        else:
            self._sent_index[key] = len(self._sent)
            self._sent.append(message)
        return self._message_json(message)

    def _message_json(self, message: SentMessage) -> dict[str, Any]:
        """The Message object Telegram returns for a bot message."""
        data: dict[str, Any] = {
            "message_id": message.message_id, "from": self.bot_user,
            "chat": self._chats[message.chat_id], "date": message.date,
        }
        if message.edit_date is not None:
            data["edit_date"] = message.edit_date
        if message.text is not None:
            data["text"] = message.text
            if message.entities:
                data["entities"] = list(message.entities)
        if message.file is not None:
            data[message.file.kind] = message.file.to_json()
            if message.caption:
                data["caption"] = message.caption
                if message.entities:
                    data["caption_entities"] = list(message.entities)
        if markup := message.inline_markup():
            data["reply_markup"] = markup
        return copy.deepcopy(data)

    def _send_message(self, params: dict[str, Any]) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        text, entities = self._message_text(params)
        return self._store(SentMessage(
            "sendMessage", chat_id, self._next_message_id(chat_id), int(time.time()),
            text=text, entities=tuple(entities), reply_markup=checked_markup(params),
        ))

    def _send_media(self, params: dict[str, Any], kind: str) -> dict[str, Any]:
        chat_id = self._chat_id(params)
        caption, entities = self._caption(params)
        file = self._input_file(params, kind)
        method = {"photo": "sendPhoto", "document": "sendDocument", "audio": "sendAudio",
                  "voice": "sendVoice"}[kind]
        return self._store(SentMessage(
            method, chat_id, self._next_message_id(chat_id), int(time.time()),
            caption=caption or None, entities=tuple(entities),
            reply_markup=checked_markup(params), file=file,
        ))

    def _message_text(self, params: dict[str, Any]) -> tuple[str, list]:
        text, entities = formatted(params, "text", "entities")
        if not text.strip():
            raise bad_request("message text is empty")
        if len(text) > MAX_TEXT_LENGTH:
            raise bad_request("message is too long")
        return text, entities

    def _caption(self, params: dict[str, Any]) -> tuple[str, list]:
        caption, entities = formatted(params, "caption", "caption_entities")
        if len(caption) > MAX_CAPTION_LENGTH:
            raise bad_request("message caption is too long")
        return caption, entities

    def _input_file(self, params: dict[str, Any], kind: str) -> TelegramFile:
        """The file of a send: an uploaded part (direct or `attach://`) or a known file_id."""
        value = params.get(kind)
        if isinstance(value, str) and value.startswith("attach://"):
            value = params.get(value.removeprefix("attach://"))
        if value is None or value == "":
            raise bad_request(f"there is no {kind} in the request")
        if isinstance(value, str):
            if value not in self._files:
                raise bad_request("wrong file identifier/HTTP URL specified")
            return self._files[value]
        dimensions = photo_dimensions(value.content) if kind == "photo" else None
        if kind == "voice":
            check_voice(value.content)
        number = len(self._files) + 1
        file = TelegramFile(
            kind=kind, file_id=f"fake-{kind}-{number}", file_unique_id=f"unique-{number}",
            filename=value.filename, content=value.content,
            mime_type=mimetypes.guess_type(value.filename)[0] or value.content_type,
            dimensions=dimensions, duration=_int(params, "duration", 0),
        )
        self._files[file.file_id] = file
        return file

    # ------------------------------------------------------------------ edits and deletes

    def _message_to_edit(self, params: dict[str, Any]) -> SentMessage:
        if params.get("inline_message_id"):
            raise bad_request("inline messages are not supported by the fake Telegram server")
        chat_id = self._chat_id(params)
        message_id = _int(params, "message_id")
        if message_id is None:
            raise bad_request("message identifier is not specified")
        message = self._current(chat_id, message_id)
        if message is None or message.deleted:
            if (chat_id, message_id) in self._user_messages:
                raise bad_request("message can't be edited")
            raise bad_request("message to edit not found")
        return message

    def _apply_edit(self, message: SentMessage, **changes: Any) -> dict[str, Any]:
        edited = replace(message, **changes)
        if edited.revision() == message.revision():
            raise bad_request(NOT_MODIFIED)
        return self._store(replace(
            edited, revisions=(*message.revisions, message.revision()),
            edit_date=int(time.time()),
        ))

    def _edit_message_text(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._message_to_edit(params)
        text, entities = self._message_text(params)
        if message.text is None:
            raise bad_request("there is no text in the message to edit")
        # Omitting reply_markup removes the inline keyboard, as on Telegram.
        return self._apply_edit(message, text=text, entities=tuple(entities),
                                reply_markup=checked_markup(params))

    def _edit_message_caption(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._message_to_edit(params)
        caption, entities = self._caption(params)
        if message.file is None:
            raise bad_request("there is no caption in the message to edit")
        return self._apply_edit(message, caption=caption or None, entities=tuple(entities),
                                reply_markup=checked_markup(params))

    def _edit_message_reply_markup(self, params: dict[str, Any]) -> dict[str, Any]:
        message = self._message_to_edit(params)
        return self._apply_edit(message, reply_markup=checked_markup(params))

    def _delete_message(self, params: dict[str, Any]) -> bool:
        chat_id = self._chat_id(params)
        key = (chat_id, _int(params, "message_id", 0))
        message = self._current(*key)
        if key in self._user_messages:
            self._user_messages.discard(key)
        elif message is None or message.deleted:
            raise bad_request("message to delete not found")
        else:
            self._store(replace(message, deleted=True))
        return True

    # ------------------------------------------------------------------ the rest

    def _send_chat_action(self, params: dict[str, Any]) -> bool:
        self._chat_id(params)
        if params.get("action") not in CHAT_ACTIONS:
            raise bad_request("wrong parameter action in request")
        return True

    def _answer_callback_query(self, params: dict[str, Any]) -> bool:
        query_id = params.get("callback_query_id")
        if query_id not in self._open_queries:
            raise bad_request(QUERY_INVALID)
        self._open_queries.discard(query_id)
        return True

    def _commands_key(self, params: dict[str, Any]) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), params.get("language_code", "")

    def _set_my_commands(self, params: dict[str, Any]) -> bool:
        commands = params.get("commands") or []
        for command in commands:
            if not re.fullmatch(r"[a-z0-9_]{1,32}", str(command.get("command", ""))):
                raise bad_request("BOT_COMMAND_INVALID")
            if not 1 <= len(str(command.get("description", "")).strip()) <= 256:
                raise bad_request("BOT_COMMAND_DESCRIPTION_INVALID")
        self._commands[self._commands_key(params)] = commands
        return True

    def _get_my_commands(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        return copy.deepcopy(self._commands.get(self._commands_key(params), []))


def photo_dimensions(content: bytes) -> tuple[int, int]:
    """(width, height) of an image Telegram would accept as a photo."""
    try:
        with Image.open(io.BytesIO(content)) as image:
            image.verify()
            width, height = image.size
    except (UnidentifiedImageError, OSError, SyntaxError):
        raise bad_request("IMAGE_PROCESS_FAILED") from None
    if width + height > 10_000 or max(width, height) > 20 * min(width, height):
        raise bad_request("PHOTO_INVALID_DIMENSIONS")
    return width, height


def check_voice(content: bytes) -> None:
    """A voice message must be OGG with Opus for clients to play it inline (Telegram
    also takes MP3 and M4A; the fake knows only OGG/Opus, what the bot sends)."""
    if not content.startswith(b"OggS") or b"OpusHead" not in content[:4096]:
        raise bad_request("VOICE_INVALID: an OGG file encoded with Opus is expected")
