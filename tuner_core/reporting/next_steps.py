"""What to do after a study: the closing note of ``tune`` and ``worker``.

    print(closing_note(config, study, "config/demo.yaml"))

It says which model versions the study registered, which version is the champion and
where its figures are (or how to promote one), how to open the study in MLflow's UI and
in optuna-dashboard, and the commands that come next: report, promote, synthesize, the
bot. Every command is printed ready to paste, with the config path as the user gave it.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

import optuna

from tuner_core import tracking
from tuner_core.config.location import PROJECT_ROOT
from tuner_core.config.sections import Config
from tuner_core.storage.attributes import VERSION_ATTR

MLFLOW_UI_URL = "http://127.0.0.1:5000"  # where `mlflow ui` serves by default
DASHBOARD_URL = "http://127.0.0.1:8080"  # where `optuna-dashboard` serves by default


def _shown(path: str | Path) -> str:
    """``path`` relative to the working folder when it lies inside it, else as it is."""
    relative = os.path.relpath(path)
    return str(path) if relative.startswith("..") else relative


def _command(*words: str | Path) -> str:
    return shlex.join(str(word) for word in words)


def _python(*words: str | Path) -> str:
    return _command(_shown(sys.executable), *words)


def closing_note(config: Config, study: optuna.Study, config_arg: str) -> str:
    """The note (several lines) that ends a study's run on the command line."""
    lines, experiment = [], None
    if config.mlflow.enabled:
        try:
            lines += _registry_lines(config, study, config_arg)
            experiment = tracking.ensure_experiment(tracking.mlflow_client(config), config)
        except Exception as error:  # tracking is an observer: it fails no command
            lines += ["", f"MLflow could not be read: {type(error).__name__}: {error}"]
    lines += ["", "Look at the study:"]
    if config.mlflow.enabled:
        command = tracking.mlflow_ui_command(config)
        served = command == config.tracking_uri  # a tracking server serves its own UI
        url = command if served else MLFLOW_UI_URL
        if experiment is not None:
            url = tracking.experiment_url(url, experiment)
        if served:
            lines.append(f"  MLflow:           {url}")
        else:
            lines += [f"  MLflow UI:        {_shown_command(command)}",
                      f"                    then open {url}"]
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    lines += [f"  optuna-dashboard: {_command(_shown(dashboard), config.storage_shown)}",
              f"                    then open {DASHBOARD_URL}"]
    report = config.state_dir / "reports" / study.study_name
    lines += ["", "Next:",
              f"  {_python('-m', 'tuner_core', 'report', '--config', config_arg)}"
              f"    # figures and report.md in {_shown(report)}"]
    if config.mlflow.enabled:
        models = _python("-m", "tuner_core", "models", "--config", config_arg)
        promote = _python("-m", "tuner_core", "promote", "best", "--config", config_arg)
        speak = _python("-m", "train.synthesize", "--checkpoint",
                        f"models:/{config.registry.model_name}@champion",
                        "--tracking-uri", config.tracking_uri, "--text", "Hello there.",
                        "--out", "hello.wav")
        lines += [f"  {models}    # the registered versions",
                  f"  {promote}    # the best version becomes the champion",
                  f"  {speak}    # the champion speaks"]
    bot = _python(_shown(PROJECT_ROOT / "run_bot.py"), "--config", config_arg)
    lines.append(f"  TELEGRAM_BOT_TOKEN=... TELEGRAM_ALLOWED_USERS=... {bot}"
                 "    # the chat (README: The Telegram bot)")
    return "\n".join(lines)


def _shown_command(command: str) -> str:
    """A command of :func:`tuner_core.tracking.store.mlflow_ui_command` with its python shown as
    :func:`_python` shows it."""
    words = shlex.split(command)
    return _python(*words[1:]) if words[0] == sys.executable else command


def _registry_lines(config: Config, study: optuna.Study, config_arg: str) -> list[str]:
    """The versions the study registered, and the champion with its figures."""
    versions = tracking.list_versions(config)
    by_number = {info["version"]: info for info in versions}
    model = config.registry.model_name
    lines = ["", f"Registered model {model}:"]
    registered = [(trial.number, trial.user_attrs[VERSION_ATTR])
                  for trial in study.get_trials(deepcopy=False)
                  if VERSION_ATTR in trial.user_attrs]
    for number, version in registered:
        info = by_number.get(version, {})
        if info.get("study") == study.study_name:
            lines.append(f"  version {version}: trial {number}, {info.get('objective_metric')} "
                         f"{info.get('value')}")
        else:
            lines.append(f"  trial {number} is version {version} already (the same "
                         f"hyperparameters and data, from study {info.get('study')})")
    if not registered:
        lines.append("  nothing from this study: no trial completed with a checkpoint")
    champion = next((info for info in versions if tracking.CHAMPION in info["aliases"]), None)
    if champion is None:
        promote = _python("-m", "tuner_core", "promote", "best", "--config", config_arg)
        lines += ["No champion yet: promotion is your decision. To promote the best version:",
                  f"  {promote}"]
        return lines
    lines.append(f"Champion: version {champion['version']} (trial {champion['trial']} of "
                 f"study {champion['study']}, {champion['objective_metric']} "
                 f"{champion['value']})")
    figures = tracking.run_figures(config, champion["run_id"])
    lines += [f"  {_shown(figure)}" for figure in figures] or [
        "  (no figures: its trainer ran with artifacts=none)"]
    return lines
