"""The model registry: the best checkpoints of studies, as versions of an MLflow model.

    list_versions(config)                    # newest first, with aliases and metrics
    promote(config, "3")                     # champion -> v3; the old champion -> previous
    promote(config, "best")                  # champion -> the version of the best value
    export(config, "champion", Path("out"))  # checkpoint, hparams, config, card, audio
    load_model_uri("models:/NAME@champion", tracking_uri)   # -> a local best.pt

One registered model, ``registry.model_name``, collects the versions of every study of
the experiment. While a study runs, :class:`RegistryListener` registers each trial that
beats the study's best so far: its best checkpoint is logged as an MLflow model of the
PyTorch flavour (a "logged model" of the trial's run, which MLflow's UI lists under
"Logged models"), and a new version points at it::

    mlflow.pytorch.load_model("models:/NAME@champion")   # the Tacotron2 module, to use

The model's folder also holds the checkpoint (``best.pt``: weights, optimiser, hparams; what
``python -m train.synthesize`` and exports use) and ``hparams.json``, and the code of the
``train`` package, so it loads with torch alone. A version's tags say where it comes from,
rounded for reading: ``study``, ``trial``, ``objective_metric``, ``value``, one
``param.NAME`` per searched parameter and one ``metric.NAME`` per metric of the
checkpoint's validation. The trial records the version number (user attr
``registered_version``). A checkpoint trained with the same hyperparameters on the same
data as a registered one (a study re-run with the same seed) is not registered again: the
trial records that version instead.

Versions are never promoted automatically: the champion is a person's decision.

Promotion moves aliases (MLflow's replacement for stages): ``champion`` marks the version
in use and ``previous`` the one it replaced, to roll back to.

Retention keeps the disk in check: after each trial, only the top ``registry.keep_top_k``
complete trials of the study keep their checkpoints (``*.pt`` in their run folders).
Trials with a registered version (the champion among them) keep theirs; so do trials still
running, failed trials whose retry will resume from their last checkpoint, and trials
stopped on request. Any other failed trial keeps its last checkpoint (``last.pt`` and its
fallback), to be resumed by hand. A trial whose best checkpoint is deleted has its
``best_checkpoint`` attribute cleared: no attribute points at a deleted file.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import optuna
import sqlalchemy
import yaml
from mlflow.entities import LoggedModelOutput, LoggedModelStatus
from mlflow.entities.model_registry import ModelVersion
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tuner_core.config import Config
from tuner_core.retries import retried_from
from tuner_core.runner import HISTORY_METRICS, Outcome, TrialListener, is_new_best
from tuner_core.study import open_storage
from tuner_core.tracking import STUDY_TAG, TRIAL_RUN_ATTR, mlflow_client
from tuner_core.trial_records import amend_user_attrs

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
BEST = "best"  # a reference, not an alias: the version with the best value
CHECKPOINT_FILE = "best.pt"
HPARAMS_FILE = "hparams.json"
VERSION_ATTR = "registered_version"
# The trainer's last checkpoint and its fallback (train.checkpoint.previous_path).
RESUMABLE = ("last.pt", "last.prev.pt")
DIGEST_TAG = "hparams_digest"  # of the checkpoint's hyperparameters and the dataset
PARAM_TAG = "param."
METRIC_TAG = "metric."


class RegistryError(LookupError):
    """A model version or alias that does not exist; the message lists the known ones."""


@dataclass
class BestCheckpoint:
    """A trial's best checkpoint, with the hyperparameters and validation that made it."""

    path: Path
    hparams: dict[str, Any]
    metrics: dict[str, Any]


# --- Registering -------------------------------------------------------------------------

def register_version(config: Config, trial: optuna.Trial, value: float,
                     best: BestCheckpoint) -> str:
    """Log ``best`` as an MLflow model and register it as a new version; its version
    number. A version of the same hyperparameters and data is reused, not duplicated."""
    run_id = trial.user_attrs.get(TRIAL_RUN_ATTR)
    if run_id is None:
        raise RegistryError(f"trial {trial.number} has no MLflow run to register from")
    client, name = mlflow_client(config), str(config.registry.model_name)
    digest = _digest(config, best.hparams)
    same = client.search_model_versions(f"name = '{name}' and tags.{DIGEST_TAG} = '{digest}'")
    if same:
        version = str(min(int(v.version) for v in same))
        log.info("trial %d is the best of study %s so far, with the hyperparameters and data "
                 "of version %s: not registered again", trial.number, trial.study.study_name,
                 version)
    else:
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(
                name, description=f"Tacotron2 checkpoints of {config.experiment_name} studies")
        model = _log_model(client, name, trial, run_id, best)
        tags = {"study": trial.study.study_name, "trial": trial.number,
                "objective_metric": config.optimization.objective_metric, "value": value,
                **{PARAM_TAG + key: item for key, item in trial.params.items()},
                **{METRIC_TAG + key: item for key, item in best.metrics.items()
                   if item is not None},
                DIGEST_TAG: digest}
        # The artifact location, not models:/<model_id>: MLflow's SQL registry resolves a
        # models:/ source through the process-wide tracking URI, not this client's.
        version = str(client.create_model_version(
            name, source=model.artifact_location, run_id=run_id, model_id=model.model_id,
            tags={key: _number(item) for key, item in tags.items()},
            description=f"trial {trial.number} of study {trial.study.study_name}").version)
        # What MLflow's own registration records, so the UI links the model to its version.
        client.set_logged_model_tags(model.model_id, {MLFLOW_MODEL_VERSIONS: json.dumps(
            [{"name": name, "version": version}])})
        log.info("trial %d is the best of study %s so far: registered as version %s",
                 trial.number, trial.study.study_name, version)
    trial.set_user_attr(VERSION_ATTR, version)
    return version


def _digest(config: Config, hparams: dict[str, Any]) -> str:
    """What makes two checkpoints the same model: all hyperparameters (the seed among
    them) and the dataset."""
    identity = json.dumps({"hparams": hparams, "dataset": str(config.dataset_path)},
                          sort_keys=True, default=str)
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def _log_model(client: mlflow.MlflowClient, name: str, trial: optuna.Trial, run_id: str,
               best: BestCheckpoint):
    """``best`` as a logged model of the trial's run (PyTorch flavour); the LoggedModel.

    This is what ``mlflow.pytorch.log_model`` does, through ``client``: log_model takes
    the store and the experiment from process-wide settings, and a worker may serve a
    store other than the process's default.
    """
    import mlflow.pytorch  # torch: loaded only when a model is registered
    import torch

    import train
    from train.synthesize import load_model

    module, _ = load_model(best.path)
    model = client.create_logged_model(
        client.get_run(run_id).info.experiment_id, name=name, source_run_id=run_id,
        params={key: str(item) for key, item in trial.params.items()},
        tags={STUDY_TAG: trial.study.study_name, "smart_tuner.trial": str(trial.number)},
        model_type="Tacotron2")
    with tempfile.TemporaryDirectory(prefix="smart_tuner_model_") as tmp:
        folder = Path(tmp, "model")
        mlflow.pytorch.save_model(
            module, str(folder), code_paths=[str(Path(train.__file__).parent)],
            # torch.export cannot trace the autoregressive decoder; and naming torch here
            # (without a local label such as +cpu) spares inferring it in a subprocess.
            serialization_format="pickle",
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            mlflow_model=mlflow.models.Model(
                artifact_path=model.artifact_location, run_id=run_id,
                model_uuid=model.model_id, model_id=model.model_id))
        for cache in list(folder.rglob("__pycache__")):
            shutil.rmtree(cache)
        shutil.copyfile(best.path, folder / CHECKPOINT_FILE)
        (folder / HPARAMS_FILE).write_text(json.dumps(best.hparams, indent=2))
        client.log_model_artifacts(model.model_id, str(folder))
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id,
                                                  step=best.metrics.get("epoch") or 0)])
    return client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


# --- Reading and promoting ---------------------------------------------------------------

def _parsed(text: str) -> Any:
    """A tag's value as the number (or JSON value) it shows, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _version_info(version: ModelVersion, aliases: list[str]) -> dict[str, Any]:
    tags = version.tags

    def prefixed(prefix: str) -> dict[str, Any]:
        return {key.removeprefix(prefix): _parsed(item) for key, item in tags.items()
                if key.startswith(prefix)}

    return {"version": str(version.version), "aliases": aliases, "study": tags.get("study"),
            "trial": _parsed(tags["trial"]) if "trial" in tags else None,
            "value": _parsed(tags["value"]) if "value" in tags else None,
            "objective_metric": tags.get("objective_metric"),
            "params": prefixed(PARAM_TAG), "metrics": prefixed(METRIC_TAG),
            "created": version.creation_timestamp / 1000, "run_id": version.run_id}


def _versions(client: mlflow.MlflowClient, name: str) -> list[dict[str, Any]]:
    models = client.search_registered_models(f"name = '{name}'")
    if not models:
        return []
    # Version searches leave aliases out; the registered model has them all.
    aliases: dict[str, list[str]] = {}
    for alias, version in models[0].aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    versions = [_version_info(v, sorted(aliases.get(str(v.version), [])))
                for v in client.search_model_versions(f"name = '{name}'")]
    return sorted(versions, key=lambda info: int(info["version"]), reverse=True)


def _find(versions: list[dict[str, Any]], name: str, ref: str | int) -> dict[str, Any]:
    ref = str(ref)
    for info in versions:
        if ref == info["version"] or ref in info["aliases"]:
            return info
    known = ", ".join(info["version"] + "".join(f" ({alias})" for alias in info["aliases"])
                      for info in versions) or "none yet"
    raise RegistryError(f"model {name!r} has no version or alias {ref!r}; versions: {known}")


def _select(config: Config, versions: list[dict[str, Any]], ref: str | int) -> dict[str, Any]:
    """The version ``ref`` names: a number, an alias, or ``best`` (the best value of the
    config's objective among the versions, the newest of equals)."""
    scored = [info for info in versions if info["value"] is not None
              and info["objective_metric"] == config.optimization.objective_metric]
    if str(ref) == BEST and scored:
        better = min if config.optimization.direction == "minimize" else max
        return better(scored, key=lambda info: info["value"])
    return _find(versions, str(config.registry.model_name), ref)


def list_versions(config: Config) -> list[dict[str, Any]]:
    """Every version of the model, newest first: ``version``, ``aliases``, ``study``,
    ``trial``, ``value``, ``objective_metric``, ``params``, ``metrics``, ``created``
    (Unix time) and ``run_id``."""
    return _versions(mlflow_client(config), str(config.registry.model_name))


def resolve(config: Config, ref: str | int) -> dict[str, Any]:
    """The version ``ref`` names: a number, an alias (``champion``, ``previous``) or
    ``best``."""
    return _select(config, list_versions(config), ref)


def promote(config: Config, ref: str | int) -> dict[str, Any]:
    """Make version ``ref`` the champion; the replaced champion becomes ``previous``.

    Returns the promoted version's info with ``already``: whether ``ref`` was the champion
    already (then nothing changes), and ``replaced``: the former champion's version, None
    when there was none or nothing changed.
    """
    client, name = mlflow_client(config), str(config.registry.model_name)
    versions = _versions(client, name)
    target = _select(config, versions, ref)["version"]
    champion = next((info["version"] for info in versions if CHAMPION in info["aliases"]), None)
    already = champion == target
    if not already:
        if champion is not None:
            client.set_registered_model_alias(name, PREVIOUS, champion)
        client.set_registered_model_alias(name, CHAMPION, target)
        log.info("model %s: version %s is the champion (was %s)", name, target, champion)
    promoted = _find(_versions(client, name), name, target)
    return promoted | {"already": already, "replaced": None if already else champion}


# --- Getting the files -------------------------------------------------------------------

def _download(client: mlflow.MlflowClient, name: str, version: str, file: str,
              dst_dir: Path) -> Path:
    source = client.get_model_version_download_uri(name, version)
    return Path(mlflow.artifacts.download_artifacts(
        artifact_uri=f"{source}/{file}", dst_path=str(dst_dir),
        tracking_uri=client.tracking_uri))


def parse_models_uri(uri: str) -> tuple[str, str]:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` as (name, alias or version)."""
    path = uri.removeprefix("models:/")
    name, at, alias = path.partition("@")
    if at:
        reference = alias
    else:
        name, _, reference = path.rpartition("/")
    if not uri.startswith("models:/") or not name or not reference or "/" in reference:
        raise RegistryError(f"{uri!r}: expected models:/<name>@<alias> or "
                            f"models:/<name>/<version>")
    return name, reference


def load_model_uri(uri: str, tracking_uri: str, dst_dir: Path | None = None) -> Path:
    """The registered checkpoint ``uri`` names, downloaded to ``dst_dir`` (default: a new
    temporary folder); e.g. ``models:/tacotron2_smart_tuning@champion``.

    The alias is resolved with a client of ``tracking_uri``, not with MLflow's global
    registry URI, so the caller's process-wide MLflow settings do not matter.
    """
    name, reference = parse_models_uri(uri)
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    version = _find(_versions(client, name), name, reference)["version"]
    dst_dir = dst_dir or Path(tempfile.mkdtemp(prefix="smart_tuner_model_"))
    return _download(client, name, version, CHECKPOINT_FILE, dst_dir)


def load_registered_model(uri: str, tracking_uri: str, device: str = "cpu"):
    """The Tacotron2 model ``uri`` names, loaded and in eval mode, and its HParams.

    ``load_registered_model("models:/tacotron2_smart_tuning@champion", tracking_uri)``
    -> ``(model, hparams)``; ``train.synthesize`` turns the model into speech.
    """
    from train.synthesize import load_model  # torch, only when a model is really loaded

    return load_model(load_model_uri(uri, tracking_uri), device)


def export(config: Config, ref: str | int, out_dir: Path) -> Path:
    """Write version ``ref`` to ``out_dir`` as a self-contained folder; ``out_dir``.

    It holds the checkpoint (``best.pt``), its ``hparams.json``, the tuner's config
    (``config.yaml``, secrets masked), an audio sample and a ``MODEL_CARD.md``.
    """
    client, name = mlflow_client(config), str(config.registry.model_name)
    info = _select(config, _versions(client, name), ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _download(client, name, info["version"], CHECKPOINT_FILE, out_dir)
    _download(client, name, info["version"], HPARAMS_FILE, out_dir)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    sample = _audio_sample(client, info["run_id"], checkpoint, out_dir)
    (out_dir / "MODEL_CARD.md").write_text(model_card(config, info, sample.name))
    return out_dir


def _audio_sample(client: mlflow.MlflowClient, run_id: str, checkpoint: Path,
                  out_dir: Path) -> Path:
    """The run's latest audio sample, else one spoken by ``checkpoint`` now."""
    samples = [item.path for item in client.list_artifacts(run_id, "audio")
               if item.path.endswith(".wav")]
    if samples:  # sample_eNNNN.wav: the highest epoch sorts last
        return Path(mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{run_id}/{max(samples)}", dst_path=str(out_dir),
            tracking_uri=client.tracking_uri))
    # Imported here: the tuner needs torch only to speak with a model no sample came with.
    from train.artifacts import write_audio_sample
    from train.synthesize import load_model

    model, hp = load_model(checkpoint)
    return write_audio_sample(model, hp, out_dir / "sample.wav")


def model_card(config: Config, info: dict[str, Any], sample: str) -> str:
    """A short Markdown description of a version: provenance, metrics, how to use it."""
    name = config.registry.model_name
    better = "lower" if config.optimization.direction == "minimize" else "higher"
    created = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["created"]))
    aliases = f" ({', '.join(info['aliases'])})" if info["aliases"] else ""
    lines = [
        f"# {name}, version {info['version']}{aliases}",
        "",
        f"Tacotron2 registered on {created} from trial {info['trial']} of study "
        f"`{info['study']}` (MLflow run `{info['run_id']}`).",
        "",
        "## Metrics",
        "",
        f"Objective ({info['objective_metric']}, {better} is better): "
        f"**{_number(info['value'])}**. At the checkpoint's validation:",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {key} | {_number(value)} |" for key, value in info["metrics"].items()),
        "",
        "## Searched hyperparameters",
        "",
        "| parameter | value |",
        "|---|---|",
        *(f"| {key} | {_number(value)} |" for key, value in info["params"].items()),
        "",
        "All hyperparameters of the checkpoint are in `hparams.json`; the tuner's config "
        "in `config.yaml`.",
        "",
        "## Files",
        "",
        f"- `{CHECKPOINT_FILE}`: the checkpoint (model, optimiser, hyperparameters)",
        f"- `{HPARAMS_FILE}`, `config.yaml`",
        f"- `{sample}`: a spoken sample (Griffin-Lim)",
        "",
        "## Synthesis",
        "",
        "```bash",
        f'python -m train.synthesize --checkpoint {CHECKPOINT_FILE} --text "Hello there." '
        "--out hello.wav",
        "# or from the registry:",
        f"python -m train.synthesize --checkpoint models:/{name}/{info['version']} "
        f'--tracking-uri {config.tracking_uri} --text "Hello there." --out hello.wav',
        "```",
        "",
    ]
    return "\n".join(lines)


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


# --- Retention ---------------------------------------------------------------------------

def enforce_retention(config: Config, study: optuna.Study,
                      finishing: FrozenTrial | None = None) -> list[Path]:
    """Delete the checkpoints of trials outside the top ``registry.keep_top_k``; the files.

    ``finishing`` is a trial as it is about to be recorded: listeners hear of a trial's
    end just before Optuna stores its state.
    """
    trials = {trial.number: trial for trial in study.get_trials(deepcopy=False)}
    if finishing is not None:
        trials[finishing.number] = finishing
    complete = sorted((t for t in trials.values() if t.state is TrialState.COMPLETE),
                      key=lambda t: t.value, reverse=study.direction is StudyDirection.MAXIMIZE)
    active = [t for t in trials.values() if not t.state.is_finished()]
    keep = {t.number for t in complete[:config.registry.keep_top_k]}
    keep |= {t.number for t in trials.values() if VERSION_ATTR in t.user_attrs}
    # A trial stopped on request was not judged; its owner may resume it by hand.
    keep |= {t.number for t in trials.values()
             if t.user_attrs.get("outcome") == Outcome.STOPPED_BY_USER}
    keep |= {t.number for t in active}
    # A retry resumes from the last checkpoint of the trial it retries.
    keep |= {number for t in active if (number := retried_from(t)) is not None}
    deleted: list[Path] = []
    for trial in trials.values():
        run_dir = trial.user_attrs.get("run_dir")
        if trial.number in keep or run_dir is None:
            continue
        spared = RESUMABLE if trial.state is TrialState.FAIL else ()
        gone = [path for path in sorted(Path(run_dir).glob("*.pt")) if path.name not in spared]
        for checkpoint in gone:
            checkpoint.unlink(missing_ok=True)
        deleted += gone
        best = trial.user_attrs.get("best_checkpoint")
        if best is not None and Path(best) in gone:
            amend_user_attrs(open_storage(config), study.study_name, trial.number,
                             {"best_checkpoint": None})
    if deleted:
        log.info("retention: deleted %d checkpoints outside the top %d", len(deleted),
                 config.registry.keep_top_k)
    return deleted


# --- The listener ------------------------------------------------------------------------

@dataclass
class _RunningTrial:
    """What the registry follows of the trial running now."""

    hparams: dict[str, Any] = field(default_factory=dict)     # of its current trainer
    validation: dict[str, Any] = field(default_factory=dict)  # the latest one's metrics
    best: BestCheckpoint | None = None


class RegistryListener(TrialListener):
    """Registers each new best trial (when MLflow is enabled), then applies retention.

    Neither may fail a trial: problems are logged as warnings.
    """

    def __init__(self, config: Config):
        self.config = config
        self._running = _RunningTrial()

    def trial_started(self, trial: optuna.Trial, hparams: dict[str, Any], run_dir: Path) -> None:
        self._running = _RunningTrial(hparams=hparams)

    def trainer_event(self, trial: optuna.Trial, event: dict[str, Any],
                      objective: float | None) -> None:
        running = self._running
        if event["event"] == "start":  # a restart after an adaptation changes them
            running.hparams = event["hparams"]
        elif event["event"] == "validation":
            running.validation = {key: event.get(key) for key in HISTORY_METRICS} | {
                "objective": objective}
        elif event["event"] == "checkpoint" and event["kind"] == "best":
            running.best = BestCheckpoint(Path(event["path"]), running.hparams,
                                          running.validation)

    def trial_finished(self, trial: optuna.Trial, state: TrialState, value: float | None,
                       attrs: dict[str, Any]) -> None:
        best = self._running.best
        if (self.config.mlflow.enabled and state is TrialState.COMPLETE and value is not None
                and best is not None and is_new_best(trial.study, value)):
            try:
                register_version(self.config, trial, value, best)
            except Exception as error:
                log.warning("trial %d could not be registered: %s: %s", trial.number,
                            type(error).__name__, error)
        try:
            enforce_retention(self.config, trial.study, _as_recorded(trial, state, value))
        except (OSError, sqlalchemy.exc.SQLAlchemyError) as error:
            log.warning("retention after trial %d failed: %s", trial.number, error)


def _as_recorded(trial: optuna.Trial, state: TrialState, value: float | None) -> FrozenTrial:
    """``trial`` as Optuna is about to record it."""
    frozen = copy.copy(trial.study.get_trials(deepcopy=False)[trial.number])
    frozen.state, frozen.value = state, value
    return frozen
