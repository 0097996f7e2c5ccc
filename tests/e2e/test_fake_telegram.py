"""The fake Telegram server answers a real aiogram Bot the way Telegram does."""

import asyncio
import io
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import (
    TelegramBadRequest,
    TelegramConflictError,
    TelegramRetryAfter,
    TelegramServerError,
    TelegramUnauthorizedError,
)
from aiogram.types import (
    BotCommand,
    BufferedInputFile,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)
from PIL import Image

from tests.deadlines import scaled
from tests.e2e.fake_telegram import TEST_TOKEN, FakeTelegram

USER = 4242


def make_bot(fake: FakeTelegram, token: str = TEST_TOKEN) -> Bot:
    session = AiohttpSession(api=TelegramAPIServer.from_base(fake.url))
    return Bot(token, session=session)


def keyboard(*callback_data: str) -> InlineKeyboardMarkup:
    row = [InlineKeyboardButton(text=data.upper(), callback_data=data) for data in callback_data]
    return InlineKeyboardMarkup(inline_keyboard=[row])


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "teal").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        server.add_user(USER, first_name="Ada", username="ada")
        yield server


@pytest.fixture
async def bot(fake: FakeTelegram) -> AsyncIterator[Bot]:
    bot = make_bot(fake)
    yield bot
    await bot.session.close()


async def test_get_me_describes_the_bot_of_the_token(bot: Bot) -> None:
    me = await bot.get_me()
    assert (me.id, me.is_bot, me.username) == (123456789, True, "smart_tuner_test_bot")


async def test_a_wrong_token_is_unauthorized(fake: FakeTelegram) -> None:
    stranger = make_bot(fake, token="987654:" + "x" * 35)
    with pytest.raises(TelegramUnauthorizedError):
        await stranger.get_me()
    await stranger.session.close()


async def test_an_unknown_method_is_not_found(fake: FakeTelegram) -> None:
    async with aiohttp.ClientSession() as http:
        answer = await http.post(f"{fake.url}/bot{TEST_TOKEN}/sendHologram", data={"x": "1"})
        assert answer.status == 404
        assert await answer.json() == {
            "ok": False, "error_code": 404, "description": "Not Found: method not found",
        }


async def test_sent_messages_are_recorded_with_their_call(fake: FakeTelegram, bot: Bot) -> None:
    first = await bot.send_message(USER, "hello", reply_markup=keyboard("a"))
    second = await bot.send_message(USER, "again")

    assert (first.message_id, second.message_id) == (1, 2)
    assert first.chat.first_name == "Ada"
    assert first.reply_markup.inline_keyboard[0][0].callback_data == "a"
    [recorded, _] = fake.messages_to(USER)
    assert (recorded.method, recorded.text) == ("sendMessage", "hello")
    assert recorded.button_data("A") == "a"
    call = fake.calls_to("sendMessage")[0]
    assert call.params["chat_id"] == str(USER)
    assert call.params["reply_markup"] == {"inline_keyboard": [[
        {"text": "A", "callback_data": "a"}]]}


async def test_an_unknown_chat_is_not_found(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="chat not found"):
        await bot.send_message(777, "anyone?")


async def test_message_text_must_hold_1_to_4096_characters(
    fake: FakeTelegram, bot: Bot
) -> None:
    await bot.send_message(USER, "x" * 4096)
    with pytest.raises(TelegramBadRequest, match="message is too long"):
        await bot.send_message(USER, "x" * 4097)
    with pytest.raises(TelegramBadRequest, match="message text is empty"):
        await bot.send_message(USER, "  \n")
    assert len(fake.messages_to(USER)) == 1


async def test_html_is_parsed_into_text_and_entities(fake: FakeTelegram, bot: Bot) -> None:
    message = await bot.send_message(
        USER, "<b>Trial 3</b> &amp; <a href='https://mlflow/3'>run</a> 🎉 <i>ok</i>",
        parse_mode="HTML",
    )
    assert message.text == "Trial 3 & run 🎉 ok"
    entities = [(e.type, e.offset, e.length, e.url) for e in message.entities]
    # The emoji takes two UTF-16 code units, so "ok" starts at 17.
    assert entities == [("bold", 0, 7, None), ("text_link", 10, 3, "https://mlflow/3"),
                        ("italic", 17, 2, None)]
    # The limit counts the text without its tags.
    await bot.send_message(USER, "<b>" + "x" * 4096 + "</b>", parse_mode="HTML")
    assert len(fake.messages_to(USER)) == 2


@pytest.mark.parametrize(("html", "reason"), [
    ("<b>unclosed", 'Can\'t find end tag corresponding to start tag "b"'),
    ("line<br>break", 'Unsupported start tag "br" at byte offset 4'),
    ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
    ("loss < 3", 'Unsupported start tag "" at byte offset 5'),
])
async def test_malformed_html_is_rejected(bot: Bot, html: str, reason: str) -> None:
    with pytest.raises(TelegramBadRequest) as error:
        await bot.send_message(USER, html, parse_mode="HTML")
    assert error.value.message == f"Bad Request: can't parse entities: {reason}"


async def test_edits_keep_history_and_reject_unchanged_content(
    fake: FakeTelegram, bot: Bot
) -> None:
    sent = await bot.send_message(USER, "epoch 1", reply_markup=keyboard("stop"))
    await bot.edit_message_text("epoch 2", chat_id=USER, message_id=sent.message_id,
                                reply_markup=keyboard("stop"))
    with pytest.raises(TelegramBadRequest, match="message is not modified"):
        await bot.edit_message_text("epoch 2", chat_id=USER, message_id=sent.message_id,
                                    reply_markup=keyboard("stop"))
    await bot.edit_message_reply_markup(chat_id=USER, message_id=sent.message_id)

    [message] = fake.messages_to(USER)
    assert (message.text, message.reply_markup) == ("epoch 2", None)
    stop_button = {"inline_keyboard": [[{"text": "STOP", "callback_data": "stop"}]]}
    assert [(r.text, r.reply_markup) for r in message.revisions] == [
        ("epoch 1", stop_button), ("epoch 2", stop_button),
    ]


async def test_editing_a_missing_message_fails(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="message to edit not found"):
        await bot.edit_message_text("new", chat_id=USER, message_id=99)


async def test_deleted_messages_stay_recorded_but_not_visible(
    fake: FakeTelegram, bot: Bot
) -> None:
    sent = await bot.send_message(USER, "progress")
    assert await bot.delete_message(USER, sent.message_id)
    with pytest.raises(TelegramBadRequest, match="message to delete not found"):
        await bot.delete_message(USER, sent.message_id)
    assert fake.messages_to(USER) == []
    assert fake.sent[0].deleted


async def test_uploaded_files_arrive_intact(fake: FakeTelegram, bot: Bot) -> None:
    plot, config, sample = png(64, 48), b"epochs: 2\n", bytes(range(256)) * 40
    photo = await bot.send_photo(USER, BufferedInputFile(plot, "alignment.png"),
                                 caption="<b>best</b> trial", parse_mode="HTML")
    document = await bot.send_document(USER, BufferedInputFile(config, "trial.yaml"))
    audio = await bot.send_audio(USER, BufferedInputFile(sample, "sample.wav"), duration=3)

    assert (photo.photo[-1].width, photo.photo[-1].height, photo.caption) == (64, 48, "best trial")
    assert photo.caption_entities[0].type == "bold"
    assert (document.document.file_name, audio.audio.duration) == ("trial.yaml", 3)
    files = [message.file for message in fake.messages_to(USER)]
    assert [(f.kind, f.filename, f.content) for f in files] == [
        ("photo", "alignment.png", plot), ("document", "trial.yaml", config),
        ("audio", "sample.wav", sample),
    ]
    assert files[2].mime_type == "audio/x-wav"


async def test_a_file_id_resends_the_stored_file(fake: FakeTelegram, bot: Bot) -> None:
    first = await bot.send_document(USER, BufferedInputFile(b"weights", "model.pt"))
    again = await bot.send_document(USER, first.document.file_id)
    assert again.document.file_id == first.document.file_id
    assert fake.messages_to(USER)[1].file.content == b"weights"
    with pytest.raises(TelegramBadRequest, match="wrong file identifier"):
        await bot.send_document(USER, "no-such-file")


async def test_photos_must_be_images_and_captions_short(bot: Bot) -> None:
    with pytest.raises(TelegramBadRequest, match="IMAGE_PROCESS_FAILED"):
        await bot.send_photo(USER, BufferedInputFile(b"not a png", "plot.png"))
    with pytest.raises(TelegramBadRequest, match="message caption is too long"):
        await bot.send_photo(USER, BufferedInputFile(png(8, 8), "plot.png"), caption="x" * 1025)


async def test_bot_commands_round_trip_and_are_validated(bot: Bot) -> None:
    commands = [BotCommand(command="tune", description="Start a study"),
                BotCommand(command="stop", description="Stop the study")]
    assert await bot.set_my_commands(commands)
    assert [(c.command, c.description) for c in await bot.get_my_commands()] == [
        ("tune", "Start a study"), ("stop", "Stop the study"),
    ]
    with pytest.raises(TelegramBadRequest, match="BOT_COMMAND_INVALID"):
        await bot.set_my_commands([BotCommand(command="Tune", description="capitalised")])


async def test_callback_data_over_64_bytes_is_rejected(bot: Bot) -> None:
    await bot.send_message(USER, "fits", reply_markup=keyboard("é" * 32))
    with pytest.raises(TelegramBadRequest, match="BUTTON_DATA_INVALID"):
        await bot.send_message(USER, "too long", reply_markup=keyboard("é" * 32 + "x"))


async def test_user_messages_mark_commands(fake: FakeTelegram) -> None:
    update = fake.user_sends(USER, "/tune@smart_tuner_test_bot 5 then /stop")
    message = update["message"]
    assert (message["from"]["username"], message["chat"]["type"]) == ("ada", "private")
    assert message["entities"] == [
        {"type": "bot_command", "offset": 0, "length": 26},
        {"type": "bot_command", "offset": 34, "length": 5},
    ]


async def test_long_poll_waits_for_an_update_and_offset_confirms_it(
    fake: FakeTelegram, bot: Bot
) -> None:
    poll = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    assert not poll.done()
    sent = fake.user_sends(USER, "/status")
    [update] = await asyncio.wait_for(poll, scaled(1))
    assert update.update_id == sent["update_id"] and update.message.text == "/status"

    assert len(await bot.get_updates()) == 1  # not confirmed yet
    assert await bot.get_updates(offset=update.update_id + 1) == []
    assert fake.pending_updates == [] and len(fake.updates) == 1

    started = time.monotonic()
    assert await bot.get_updates(timeout=1) == []
    assert time.monotonic() - started >= 0.9


async def test_allowed_updates_filters_update_types(fake: FakeTelegram, bot: Bot) -> None:
    sent = await bot.send_message(USER, "choose", reply_markup=keyboard("go"))
    fake.user_presses(USER, fake.messages_to(USER)[0], "go")
    fake.user_sends(USER, "hi")
    [update] = await bot.get_updates(allowed_updates=["message"])
    assert update.message.text == "hi"

    fake.user_presses(USER, fake.messages_to(USER)[0], "go")
    [update] = await bot.get_updates(offset=update.update_id + 1, allowed_updates=[])
    assert update.callback_query.message.message_id == sent.message_id


async def test_a_second_poller_ends_the_first_with_a_conflict(bot: Bot) -> None:
    first = asyncio.create_task(bot.get_updates(timeout=5))
    await asyncio.sleep(0.1)
    second = asyncio.create_task(bot.get_updates(timeout=0))
    with pytest.raises(TelegramConflictError):
        await asyncio.wait_for(first, scaled(1))
    assert await second == []


async def test_a_429_surfaces_as_retry_after(fake: FakeTelegram, bot: Bot) -> None:
    fake.fail_next(1, status=429, retry_after=3, methods=["sendMessage"])
    await bot.get_me()  # other methods are not affected
    with pytest.raises(TelegramRetryAfter) as error:
        await bot.send_message(USER, "flood")
    assert error.value.retry_after == 3
    await bot.send_message(USER, "later")
    assert fake.failures_served == 1
    assert [call.status for call in fake.calls_to("sendMessage")] == [429, 200]
    assert [m.text for m in fake.messages_to(USER)] == ["later"]


async def test_a_failure_window_answers_502(fake: FakeTelegram, bot: Bot) -> None:
    window = scaled(0.2)  # both calls below must fall in it
    fake.fail_for(window, status=502)
    with pytest.raises(TelegramServerError, match="Bad Gateway"):
        await bot.send_message(USER, "down")
    with pytest.raises(TelegramServerError):
        await bot.get_me()
    await asyncio.sleep(window + 0.05)
    await bot.send_message(USER, "up")
    assert fake.failures_served == 2


async def test_a_callback_query_can_be_answered_once(fake: FakeTelegram, bot: Bot) -> None:
    await bot.send_message(USER, "study finished", reply_markup=keyboard("promote"))
    message = fake.messages_to(USER)[0]
    update = fake.user_presses(USER, message, message.button_data("PROMOTE"))
    query_id = update["callback_query"]["id"]
    assert await bot.answer_callback_query(query_id, text="Promoted")
    with pytest.raises(TelegramBadRequest, match="query is too old"):
        await bot.answer_callback_query(query_id)
    with pytest.raises(ValueError, match="no button with callback_data 'delete'"):
        fake.user_presses(USER, message, "delete")


async def test_dispatcher_polling_echoes_a_message(fake: FakeTelegram, bot: Bot) -> None:
    dispatcher = Dispatcher()

    @dispatcher.message()
    async def echo(message: Message) -> None:
        await message.answer(f"echo: {message.text}")

    polling = asyncio.create_task(
        dispatcher.start_polling(bot, handle_signals=False, close_bot_session=False)
    )
    fake.user_sends(USER, "hello")
    reply = await fake.wait_for_async(lambda: fake.find_message(USER, "echo"), timeout=2)
    assert reply.text == "echo: hello"
    # Its next poll confirms the handled update.
    await fake.wait_for_async(lambda: not fake.pending_updates, timeout=2)
    await dispatcher.stop_polling()
    await asyncio.wait_for(polling, scaled(2))


def test_a_threaded_server_serves_a_bot_in_another_loop() -> None:
    with FakeTelegram() as fake:
        fake.add_user(USER)

        async def converse() -> list[str]:
            bot = make_bot(fake)
            try:
                poll = asyncio.create_task(bot.get_updates(timeout=5))
                await asyncio.sleep(0.1)
                fake.user_sends(USER, "/start")
                [update] = await poll
                await bot.send_message(USER, f"got {update.message.text}")
            finally:
                await bot.session.close()
            return [m.text for m in fake.messages_to(USER)]

        assert asyncio.run(converse()) == ["got /start"]
        assert fake.wait_for(lambda: fake.find_message(USER, "got"), timeout=1)
        with pytest.raises(TimeoutError, match="last bot messages"):
            fake.wait_for(lambda: fake.find_message(USER, "never"), timeout=0.1)
