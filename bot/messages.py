"""Every text the bot sends, in Telegram's HTML parse mode.

Names and strings that come from studies, trials or the user are escaped with
:func:`html.escape`. Telegram's limits are kept here: a message is at most
:data:`MESSAGE_LIMIT` characters (:func:`split_message`), a caption at most
:data:`CAPTION_LIMIT` (:func:`caption`). Tags never span lines except ``<pre>``
blocks, which is what lets :func:`split_message` cut between lines.
"""

from __future__ import annotations

import html
import re
import textwrap
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bot.clock import duration
from bot.fleet_texts import fleet_lines
from bot.listening_texts import best_lines, new_best_note
from bot.service import ExportedModel, StartedStudy, StopOutcome, quoted
from tuner_core.reporting.events import Kind, Notification

MESSAGE_LIMIT = 4096
CAPTION_LIMIT = 1024
STALE_AFTER_S = 30  # a status older than this says how old it is
REASON_WIDTH = 60  # characters of a reason in the /trials table
PRIVATE = "This bot is private."
# Before a notification's message whose request was out when the bot stopped last.
IN_DOUBT = ("↻ <i>Telegram had not confirmed the next message when the bot stopped or lost "
            "its connection, so it may have arrived already; here it is again.</i>")

# (command, what it does): the /help table and the menu registered with set_my_commands.
COMMANDS: list[tuple[str, str]] = [
    ("tune", "start a study: /tune N runs N trials"),
    ("status", "the running or last study, with Refresh and Stop"),
    ("best", "the best trial: value, parameters, audio, promote, export"),
    ("stop", "stop the running study (asks first)"),
    ("trials", "the last 10 trials and why each ended"),
    ("workers", "the fleet: hosts, devices, current trials, heartbeats"),
    ("plot", "learning curves of the study"),
    ("models", "registered model versions and aliases"),
    ("help", "this list"),
]


# --- commands ------------------------------------------------------------------------------

def help_text(experiment: str) -> str:
    rows = "\n".join(f"/{command} — {html.escape(what)}" for command, what in COMMANDS)
    return (f"<b>Smart Tuner</b> tunes Tacotron2 hyperparameters with Optuna "
            f"(experiment <code>{html.escape(experiment)}</code>).\n"
            "Each trial is a real training run; weak ones are pruned or stopped early, and "
            "I tell you here what happens.\n\n" + rows)


def unknown_command(command: str) -> str:
    return (f"I don't know the command {html.escape(quoted(command))}; commands are "
            "lower-case. /help lists them.")


def study_started(study: StartedStudy) -> str:
    return (f"🚀 Started study <code>{html.escape(study.name)}</code>: "
            f"{plural(study.n_trials, 'trial')}, objective "
            f"{html.escape(study.objective_metric)} "
            f"({study.direction}).\n"
            f"Search space:\n{_pre(study.search_space)}\n"
            + ("The standing workers take its trials (/workers lists them). "
               if study.by_fleet else "")
            + "I will report every trial here. /status shows the progress.")


def already_running(status: Mapping[str, Any]) -> str:
    return ("A study is already running; stop it first or wait for it to finish.\n\n"
            + status_text(status))


def no_study() -> str:
    return "No study yet. Start one with /tune N."


def status_text(status: Mapping[str, Any]) -> str:
    """A study's progress: trials by outcome, best value, the running trials, time."""
    state = status["state"] + (f" ({status['end_reason']})" if status["end_reason"] else "")
    counts = _outcomes(status["outcomes"]) or "none yet"
    lines = [f"📊 Study <code>{html.escape(status['study_name'])}</code>: "
             f"{html.escape(state)}",
             f"Trials: {counts} (budget {status['n_trials']})"]
    if status["best_value"] is not None:
        lines.append(f"Best: {_number(status['best_value'])} (trial {status['best_trial']})")
    for trial in status["running"]:
        lines.append(_running_trial(trial))
    timing = f"Elapsed {duration(status['elapsed_s'])}"
    if status.get("eta_s"):
        timing += f", about {duration(status['eta_s'])} left"
    lines.append(timing)
    lines += fleet_lines(status.get("fleet") or [])
    as_of = f"as of {time.strftime('%H:%M:%S', time.localtime(status['as_of']))}"
    age = time.time() - status["as_of"]
    if age >= STALE_AFTER_S:  # the polls have not been reading the storage
        as_of += f", {duration(age)} ago"
    lines.append(f"<i>{as_of}</i>")
    return "\n".join(lines)


def _running_trial(trial: Mapping[str, Any]) -> str:
    metrics = trial.get("last_metrics") or {}
    shown = ", ".join(f"{key} {_number(metrics[key])}"
                      for key in ("objective", "val_loss", "train_loss", "alignment_score")
                      if metrics.get(key) is not None)
    epoch = metrics.get("epoch")
    where = f"epoch {epoch}" if epoch is not None else "starting"
    return f"▶️ Trial {trial['number']}: {where}" + (f" — {shown}" if shown else "")


def stop_question(status: Mapping[str, Any]) -> str:
    return (f"Stop study <code>{html.escape(status['study_name'])}</code>? Running trials "
            "end gracefully (their checkpoints are kept) and no new trial starts.")


def stop_result(name: str, outcome: StopOutcome) -> str:
    name = f"<code>{html.escape(name)}</code>"
    if outcome is StopOutcome.REQUESTED:
        return (f"⏹ Stop requested for study {name}. "
                "I will tell you when its workers have stopped.")
    if outcome is StopOutcome.ALREADY_STOPPING:
        return f"Study {name} is already stopping."
    return f"Study {name} has already finished."


def stop_cancelled() -> str:
    return "OK, the study keeps running."


def best_text(best: Mapping[str, Any], model: Mapping[str, Any] | None) -> str:
    """The best trial, and its registered model version when there is one."""
    lines = [f"🏆 Best of <code>{html.escape(best['study_name'])}</code>: "
             f"<b>{_number(best['value'])}</b> (trial {best['number']})",
             _params_table(best["params"])]
    if best.get("reason"):
        lines.append(f"Ended: {html.escape(best['reason'])}")
    confirmation = best.get("confirmation")
    if confirmation:
        lines.append(f"✔️ Confirmed over {confirmation['seeds']} training seeds: mean "
                     f"<b>{_number(confirmation['mean'])}</b> ± {_number(confirmation['std'])}")
    else:
        lines.append("Not confirmed: one training seed, which may have been lucky.")
    lines += best_lines(best)
    if best.get("mlflow_run_id"):
        lines.append(f"MLflow run <code>{html.escape(best['mlflow_run_id'])}</code>")
    if model:
        aliases = ", ".join(model["aliases"]) or "no alias"
        lines.append(f"Model version {model['version']} ({html.escape(aliases)})")
    else:
        lines.append("Not registered as a model version.")
    return "\n".join(lines)


def no_best(study: str | None) -> str:
    if study is None:
        return no_study()
    return (f"No trial of <code>{html.escape(study)}</code> has completed yet; /status shows "
            "how it goes.")


def trials_text(study: str, rows: list[Mapping[str, Any]]) -> str:
    """A table of trials: number, outcome, value and why each ended."""
    if not rows:
        return f"Study <code>{html.escape(study)}</code> has no trials yet."
    table = [f"{'#':>3} {'outcome':<15} {'value':>8}  reason"]
    for row in rows:
        outcome = row["outcome"] or row["state"].lower()
        if row.get("confirms") is not None:
            outcome = f"confirms {row['confirms']}"
        reason = textwrap.shorten(row["reason"] or "", REASON_WIDTH, placeholder=" …")
        table.append(f"{row['number']:>3} {outcome:<15} {_number(row['value']):>8}  {reason}")
    return f"Last trials of <code>{html.escape(study)}</code>:\n{_pre(table)}"


def plot_caption(study: str, best_trial: int | None) -> str:
    best = (f"the best is trial {best_trial}" if best_trial is not None
            else "no trial has completed")
    return caption(f"Learning curves of {study}: the objective at every validation; {best}.")


def anytime_caption(study: str) -> str:
    return caption(f"{study}: the best value against the epochs its trials spent; a pruned "
                   "trial costs only the epochs it trained.")


def models_text(models: list[Mapping[str, Any]]) -> str:
    """One line a version, wrapped by the client (no table: a study name is wider than
    a phone's screen)."""
    if not models:
        return "No model is registered yet; the best trial of a study is registered when it ends."
    lines = ["Registered models, newest first:"]
    for model in models:
        aliases = ", ".join(model["aliases"]) or "no alias"
        metric = html.escape(str(model.get("objective_metric") or "value"))
        lines.append(f"<b>v{model['version']}</b> · {metric} {_number(model.get('value'))} · "
                     f"<b>{html.escape(aliases)}</b> · trial {model['trial']} of "
                     f"<code>{html.escape(str(model['study']))}</code>")
    return "\n".join(lines)


def promoted(result: Mapping[str, Any]) -> str:
    if result.get("already"):
        return f"🏆 Version {result['version']} already is the champion; nothing changed."
    if result["replaced"] is None:
        return f"🏆 Version {result['version']} is the champion."
    return (f"🏆 Version {result['version']} is now the champion "
            f"(version {result['replaced']} is kept as 'previous').")


def promote_answer(result: Mapping[str, Any]) -> str:
    """The button's own answer (a notice over the chat)."""
    return "Already the champion" if result.get("already") else "Promoted"


def exported(export: ExportedModel) -> str:
    if export.zip_path is None:
        return (f"The export of version {export.version} is larger than 50 MB, too big to send "
                f"here; it is in <code>{html.escape(str(export.folder))}</code>.")
    return caption(f"Version {export.version}: checkpoint, hyperparameters and model card.")


def audio_caption(trial: int) -> str:
    return f"Trial {trial}: a fixed sentence, spoken by the model (Griffin-Lim vocoder)."


def no_audio(trial: int) -> str:
    return f"Trial {trial} has no audio sample."


def cancelled(command: str | None = None, button: str | None = None) -> str:
    """To the chat of a request the stopping bot cancelled: the ``command`` it sent or
    the ``button`` (its label) it pressed."""
    if command is not None:
        request = f"your {html.escape(quoted(command), quote=False)}"
    elif button is not None:
        request = f"your press of {html.escape(quoted(button), quote=False)}"
    else:
        request = "your request"
    return f"⏹ The bot is stopping, so {request} was cancelled. Ask again once it is back."


def another_bot_took_over(host: str, state_dir: Path) -> str:
    return (f"🛑 The bot on {html.escape(host)} (state folder "
            f"<code>{html.escape(str(state_dir))}</code>) has stopped: another bot is polling "
            "Telegram with the same token, and Telegram gives each message to one bot only. "
            "The other bot answers here from now on, with the studies of its own state "
            "folder. To have this one back, stop the other and restart this one.")


# --- notifications --------------------------------------------------------------------------

def notification_text(notification: Notification) -> str:
    facts = notification.facts
    study = f"<code>{html.escape(notification.study)}</code>"
    if notification.kind is Kind.TRAINING_START:
        objective = (f"{html.escape(str(facts['objective_metric']))} "
                     f"({html.escape(str(facts['direction']))})")
        return (f"🚀 Study {study} started: {plural(facts['budget'], 'trial')}, "
                f"objective {objective}.\n"
                f"Search space:\n{_pre(facts['search_space'])}")
    if notification.kind is Kind.RESTARTS:
        changes = [f"{name}: {_number(old)} → {_number(new)}"
                   for name, (old, new) in facts["changes"].items()]
        return (f"🔁 Trial {facts['trial']} of {study} restarts from its best checkpoint "
                f"(restart {facts['restart']}, {html.escape(str(facts['criterion']))} "
                f"at epoch {facts['epoch']}): {html.escape(str(facts['reason']))}\n"
                f"{_pre(changes)}")
    if notification.kind is Kind.ANOMALIES:
        return (f"⚠️ Trial {facts['trial']} of {study}: "
                f"{html.escape(str(facts.get('message', 'an anomaly')))}")
    if notification.kind is Kind.OPTIMIZATION_UPDATES:
        before = (f" (was {_number(facts['previous_value'])}, trial {facts['previous_trial']})"
                  if facts["previous_trial"] is not None else "")
        return (f"🏆 New best in {study}: <b>{_number(facts['value'])}</b> by trial "
                f"{facts['trial']}{before}\n{_params_table(facts['params'])}"
                + new_best_note(facts))
    if notification.kind is Kind.TRAINING_COMPLETE:
        return _study_finished(study, facts)
    return _trial_finished(study, facts)


def _trial_finished(study: str, facts: Mapping[str, Any]) -> str:
    trial, outcome = facts["trial"], facts["outcome"]
    took = f" in {duration(facts['duration_s'])}" if facts["duration_s"] is not None else ""
    reason = html.escape(str(facts["reason"] or ""))
    if outcome == "worker_lost":
        retry = " It is retried from its last checkpoint." if facts["retried"] else ""
        return f"❌ Trial {trial} of {study} lost its worker (no heartbeat).{retry}"
    if outcome == "failed":
        tail = facts["log_tail"].strip()
        return (f"❌ Trial {trial} of {study} failed{took}: {reason} "
                f"(exit code {facts['exit_code']}).\n"
                + (f"Log tail:\n{_pre(tail.splitlines())}" if tail else ""))
    if outcome == "stopped_by_user":
        return f"⏹ Trial {trial} of {study} stopped on request{took}."
    lines = []
    if outcome in ("pruned", "early_stopped"):
        verb = "pruned" if outcome == "pruned" else "stopped early"
        # The epoch once: most reasons name it already.
        epoch = facts["stop_epoch"]
        at = "" if re.search(rf"\bepoch {epoch}\b", reason) else f" at epoch {epoch}"
        lines.append(f"{'✂️' if outcome == 'pruned' else '⏸'} Trial {trial} of {study} {verb} "
                     f"by {html.escape(str(facts['criterion']))}{at}{took}: {reason}")
        lines += _advice(facts)
    else:
        lines.append(f"✅ Trial {trial} of {study} completed{took}: {reason}")
    if facts.get("confirms") is not None:
        lines.append(f"🔁 It confirms trial {facts['confirms']} with another training seed.")
    if facts["value"] is not None:
        lines.append(f"Value: <b>{_number(facts['value'])}</b>"
                     + (" 🏆 new best" if facts["new_best"] else ""))
    return "\n".join(lines)


def _advice(facts: Mapping[str, Any]) -> list[str]:
    """The recommendation, and which of the hyperparameters it names the study searches
    and which are the user's to change in the config."""
    if not facts["recommendation"]:
        return []
    lines = [f"💡 {html.escape(facts['recommendation'])}"]
    advice = facts.get("advice") or {}
    if searched := advice.get("searched"):
        lines.append(f"The study searches {_names(searched)}: later trials try other values.")
    if in_config := advice.get("in_config"):
        lines.append(f"Fixed for this study, yours to change in the config: "
                     f"{_names(in_config)}.")
    return lines


def _names(names: list[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return " and ".join(filter(None, [", ".join(names[:-1]), names[-1]]))


def _study_finished(study: str, facts: Mapping[str, Any]) -> str:
    counts = _outcomes(facts["outcomes"])
    lines = [f"🏁 Study {study} finished: {html.escape(str(facts['end_reason']))}.",
             f"Trials: {counts or 'none'}"
             + (f", in {duration(facts['elapsed_s'])}" if facts["elapsed_s"] else "")]
    if facts["best_trial"] is None:
        lines.append("No trial completed.")
    else:
        lines.append(f"Best: <b>{_number(facts['best_value'])}</b> "
                     f"(trial {facts['best_trial']})")
        lines.append(_params_table(facts["best_params"]))
    return "\n".join(lines)


# --- Telegram's limits ---------------------------------------------------------------------

def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut between lines.

    A ``<pre>`` block cut in two is closed at the end of one piece and reopened at the
    start of the next, so every piece is valid HTML. A line longer than a piece is cut
    inside, but never within an HTML entity such as ``&amp;``.
    """
    pieces: list[str] = []
    current, in_pre = "", False  # in_pre: a <pre> opened in the text is not closed yet
    for line in _short_lines(text.split("\n"), limit - len("<pre></pre>")):
        if current and len(current) + 1 + len(line) + len("</pre>") > limit:
            pieces.append(current + ("</pre>" if in_pre else ""))
            current = "<pre>" if in_pre else ""
        current = current + line if current in ("", "<pre>") else f"{current}\n{line}"
        if "</pre>" in line:
            in_pre = False
        elif "<pre>" in line:
            in_pre = True
    pieces.append(current)
    return pieces


def _short_lines(lines: Iterable[str], width: int) -> Iterator[str]:
    for line in lines:
        while len(line) > width:
            cut = width
            entity = line.rfind("&", 0, width)
            if entity > 0 and ";" not in line[entity:width]:
                cut = entity  # keep "&amp;" and the like whole
            yield line[:cut]
            line = line[cut:]
        yield line


def caption(text: str) -> str:
    """Plain ``text`` escaped for HTML and cut to Telegram's caption limit."""
    if len(text) > CAPTION_LIMIT:
        text = text[:CAPTION_LIMIT - 1] + "…"
    return html.escape(text)


# --- small formats ---------------------------------------------------------------------------

def plural(count: int, noun: str) -> str:
    """``1 trial``, ``2 trials``."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


# Trials by outcome (tuner_core.reporting.summary.outcome_counts), in words: a trial
# stopped on request is PRUNED for Optuna, but it was stopped, not pruned.
OUTCOME_WORDS = {"running": "running", "waiting": "waiting", "completed": "complete",
                 "early_stopped": "stopped early", "pruned": "pruned",
                 "stopped_by_user": "stopped", "failed": "failed"}


def _outcomes(counts: Mapping[str, int]) -> str:
    """``1 running, 2 complete, 1 stopped``; empty when there is no trial."""
    return ", ".join(f"{count} {OUTCOME_WORDS.get(outcome, outcome)}"
                     for outcome, count in counts.items() if count)


def _params_table(params: Mapping[str, Any]) -> str:
    if not params:
        return "(no searched parameters)"
    width = max(len(name) for name in params)
    return _pre(f"{name:<{width}}  {_number(value)}" for name, value in params.items())


def _pre(lines: Iterable[str]) -> str:
    return "<pre>" + html.escape("\n".join(lines)) + "</pre>"
