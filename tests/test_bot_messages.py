"""The bot's texts: HTML escaping and Telegram's length limits."""

import html
import re
import time

from bot import messages
from tuner_core.reporting.events import Kind, Notification


def test_a_long_text_is_split_between_lines_and_pre_blocks_stay_valid() -> None:
    table = "<pre>" + "\n".join(f"row {n:04d} " + "x" * 60 for n in range(200)) + "</pre>"
    text = "<b>Header</b>\n" + table + "\nFooter"
    pieces = messages.split_message(text)
    assert len(pieces) > 1
    assert all(len(piece) <= messages.MESSAGE_LIMIT for piece in pieces)
    assert all(piece.count("<pre>") == piece.count("</pre>") == 1 for piece in pieces)
    # Nothing lost, nothing added but the tags that close and reopen the block.
    joined = "\n".join(re.sub(r"</?pre>", "", piece) for piece in pieces)
    assert joined == re.sub(r"</?pre>", "", text)


def test_a_short_text_is_one_piece() -> None:
    assert messages.split_message("hello\n<pre>a\nb</pre>") == ["hello\n<pre>a\nb</pre>"]


def test_an_overlong_line_is_cut_outside_html_entities() -> None:
    line = "&amp;" * 2000  # 10000 characters of escaped ampersands
    pieces = messages.split_message(f"<pre>{line}</pre>")
    assert all(len(piece) <= messages.MESSAGE_LIMIT for piece in pieces)
    assert all(re.fullmatch(r"<pre>(&amp;)+</pre>", piece) for piece in pieces)


def test_captions_are_escaped_and_cut_to_the_limit() -> None:
    caption = messages.plot_caption("<study>" + "s" * 2000, best_trial=3)
    assert "&lt;study&gt;" in caption
    assert len(html.unescape(caption)) == messages.CAPTION_LIMIT


def test_names_and_reasons_from_trials_are_escaped() -> None:
    notification = Notification("trial:<s>:0:finished", Kind.EARLY_STOP, "<s>&", {
        "trial": 0, "state": "PRUNED", "outcome": "pruned", "value": None, "new_best": False,
        "retried": False, "duration_s": 75.0, "params": {}, "criterion": "<patience>",
        "reason": "loss <= 1 & rising", "recommendation": "try <b>", "stop_epoch": 3,
        "exit_code": None, "log_tail": ""})
    text = messages.notification_text(notification)
    assert text == ("✂️ Trial 0 of <code>&lt;s&gt;&amp;</code> pruned by "
                    "&lt;patience&gt; at epoch 3 in 1m 15s: loss &lt;= 1 &amp; rising\n"
                    "💡 try &lt;b&gt;")


def test_a_failed_trial_shows_its_log_tail() -> None:
    notification = Notification("trial:s:2:finished", Kind.ERROR_ALERTS, "s", {
        "trial": 2, "state": "FAIL", "outcome": "failed", "value": None, "new_best": False,
        "retried": False, "duration_s": 5.0, "params": {}, "criterion": "crash",
        "reason": "trainer exited with code 1", "recommendation": "", "stop_epoch": 0,
        "exit_code": 1, "log_tail": "Traceback:\n  ValueError: <bad>\n"})
    text = messages.notification_text(notification)
    assert "(exit code 1)" in text
    assert "<pre>Traceback:\n  ValueError: &lt;bad&gt;</pre>" in text


def test_durations_read_naturally() -> None:
    assert [messages.duration(s) for s in (42, 252, 11100)] == ["42s", "4m 12s", "3h 05m"]


OUTCOMES = {"completed": 1, "pruned": 1, "stopped_by_user": 1}  # one trial stopped on request
STATES = {"COMPLETE": 1, "PRUNED": 2}  # Optuna's: the stopped trial is PRUNED


def test_status_counts_a_stopped_trial_as_stopped() -> None:
    status = {"study_name": "s", "state": "finished", "end_reason": "stopped on request",
              "counts": STATES, "outcomes": OUTCOMES, "n_trials": 4, "best_value": 0.5,
              "best_trial": 0, "running": [], "elapsed_s": 60.0, "eta_s": None,
              "as_of": time.time()}
    text = messages.status_text(status)
    assert "Trials: 1 complete, 1 pruned, 1 stopped (budget 4)" in text
    assert "2 pruned" not in text


def test_the_end_of_a_study_counts_a_stopped_trial_as_stopped() -> None:
    notification = Notification("study:s:finished", Kind.TRAINING_COMPLETE, "s", {
        "end_reason": "stopped on request", "counts": STATES, "outcomes": OUTCOMES,
        "elapsed_s": 60.0, "best_trial": 0, "best_value": 0.5, "best_params": {}})
    text = messages.notification_text(notification)
    assert "Trials: 1 complete, 1 pruned, 1 stopped, in 1m 00s" in text
    assert "2 pruned" not in text
