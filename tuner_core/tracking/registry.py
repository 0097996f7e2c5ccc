"""The model registry: the best checkpoints of studies, as versions of an MLflow model.

    list_versions(config)                    # newest first, with aliases and metrics
    promote(config, "3")                     # champion -> v3; the old champion -> previous
    promote(config, "best")                  # champion -> the version of the best value
    export(config, "champion", Path("out"))  # checkpoint, hparams, config, card, audio
    load_model_uri("models:/NAME@champion", tracking_uri)   # -> a local best.pt

One registered model, ``registry.model_name``, collects the versions of every study of
the experiment, registered while the studies run (:mod:`tuner_core.tracking.registering`).

Versions are never promoted automatically: the champion is a person's decision.
Promotion moves aliases (MLflow's replacement for stages): ``champion`` marks the version
in use and ``previous`` the one it replaced, to roll back to.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.entities import LoggedModel, ViewType
from mlflow.entities.model_registry import ModelVersion

from train.tacotron2 import vocoder
from train.tacotron2.hparams import HParams
from tuner_core.config.sections import Config
from tuner_core.errors import RegistryError, RequirementsUnmet
from tuner_core.lazy import LazyModule
from tuner_core.rules.requirements import unmet
from tuner_core.tracking.runs import LISTENING_PREFIX
from tuner_core.tracking.store import BEST_OBJECTIVE, mlflow_client

# torch, only when a model is really loaded.
artifacts = LazyModule("train.tacotron2.artifacts")
synthesize = LazyModule("train.synthesize")

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
BEST = "best"  # a reference, not an alias: the version with the best value
CHECKPOINT_FILE = "best.pt"
HPARAMS_FILE = "hparams.json"
DIGEST_TAG = "hparams_digest"  # of the checkpoint's hyperparameters and the dataset
CONFIRMED_TAG = "confirmed."  # mean, std, seeds: its configuration over training seeds


def _parsed(text: str) -> Any:
    """A tag's value as the number (or JSON value) it shows, else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _version_info(version: ModelVersion, aliases: list[str],
                  model: LoggedModel | None) -> dict[str, Any]:
    """What the list, the CLI and the bot show of a version: its tags, and the params and
    linked metrics of its logged ``model`` (None: not found)."""
    tags = version.tags
    metrics = {point.key: point for point in sorted(
        model.metrics or [] if model else [], key=lambda point: (point.step, point.timestamp))}
    best = metrics.pop(BEST_OBJECTIVE, None)
    listening = {key.removeprefix(LISTENING_PREFIX): metrics.pop(key).value
                 for key in list(metrics) if key.startswith(LISTENING_PREFIX)}
    return {"version": str(version.version), "aliases": aliases, "study": tags.get("study"),
            "trial": _parsed(tags["trial"]) if "trial" in tags else None,
            "value": best.value if best else None,
            "objective_metric": tags.get("objective_metric"),
            "params": {key: _parsed(item) for key, item in (model.params if model else {}).items()},
            "metrics": {key: point.value for key, point in metrics.items()},
            "listening": listening or None,
            "epoch": max((point.step for point in metrics.values()), default=None),
            "confirmation": {key.removeprefix(CONFIRMED_TAG): _parsed(item)
                             for key, item in tags.items()
                             if key.startswith(CONFIRMED_TAG)} or None,
            "created": version.creation_timestamp / 1000, "run_id": version.run_id}


def _logged_models(client: mlflow.MlflowClient, name: str) -> dict[str, LoggedModel]:
    """The logged models named ``name``, by artifact location: a version's source (MLflow's
    SQL registry keeps no model id on a version)."""
    experiments = [experiment.experiment_id
                   for experiment in client.search_experiments(view_type=ViewType.ALL)]
    models: dict[str, LoggedModel] = {}
    token = None
    while True:
        page = client.search_logged_models(experiments, f"name = '{name}'", page_token=token)
        models.update((model.artifact_location, model) for model in page)
        token = page.token
        if not token:
            return models


def version_model(client: mlflow.MlflowClient, name: str, version: str) -> LoggedModel | None:
    """The logged model version ``version`` of ``name`` points at (None: not found)."""
    source = client.get_model_version(name, version).source
    return _logged_models(client, name).get(source)


def _versions(client: mlflow.MlflowClient, name: str) -> list[dict[str, Any]]:
    models = client.search_registered_models(f"name = '{name}'")
    if not models:
        return []
    # Version searches leave aliases out; the registered model has them all.
    aliases: dict[str, list[str]] = {}
    for alias, version in models[0].aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    logged = _logged_models(client, name)
    versions = [_version_info(v, sorted(aliases.get(str(v.version), [])), logged.get(v.source))
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
    ``trial``, ``value``, ``objective_metric``, ``params`` and ``metrics`` (of its logged
    model), ``epoch`` (of those metrics), ``confirmation``, ``created`` (Unix time) and
    ``run_id``."""
    return _versions(mlflow_client(config), str(config.registry.model_name))


def resolve(config: Config, ref: str | int) -> dict[str, Any]:
    """The version ``ref`` names: a number, an alias (``champion``, ``previous``) or
    ``best``."""
    return _select(config, list_versions(config), ref)


def promote(config: Config, ref: str | int, force: bool = False) -> dict[str, Any]:
    """Make version ``ref`` the champion; the replaced champion becomes ``previous``.

    Returns the promoted version's info with ``already``: whether ``ref`` was the champion
    already (then nothing changes), and ``replaced``: the former champion's version, None
    when there was none or nothing changed. A version that fails ``registry.requirements``
    (or was never evaluated) is refused with a :class:`RequirementsUnmet` that names them,
    unless ``force``.
    """
    client, name = mlflow_client(config), str(config.registry.model_name)
    versions = _versions(client, name)
    selected = _select(config, versions, ref)
    target = selected["version"]
    failed = unmet(config.registry.parsed_requirements, selected["listening"])
    if failed and not force:
        raise RequirementsUnmet(target, failed)
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
    return synthesize.load_model(load_model_uri(uri, tracking_uri), device)


def export(config: Config, ref: str | int, out_dir: Path) -> Path:
    """Write version ``ref`` to ``out_dir`` as a self-contained folder; ``out_dir``.

    It holds the checkpoint (``best.pt``), its ``hparams.json``, the tuner's config
    (``config.yaml``, secrets masked), an audio sample and a ``MODEL_CARD.md``.
    """
    client, name = mlflow_client(config), str(config.registry.model_name)
    info = _select(config, _versions(client, name), ref)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = _download(client, name, info["version"], CHECKPOINT_FILE, out_dir)
    hparams = _download(client, name, info["version"], HPARAMS_FILE, out_dir)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    sample = _audio_sample(client, info["run_id"], checkpoint, out_dir)
    hp = HParams.from_dict(json.loads(hparams.read_text()))  # its vocoder spoke the sample
    info = info | {"vocoder": vocoder.chosen(hp.vocoder, hp)}
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
    # The tuner needs torch only to speak with a model no sample came with.
    model, hp = synthesize.load_model(checkpoint)
    return artifacts.write_audio_sample(model, hp, out_dir / "sample.wav")


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
        f"**{format_number(info['value'])}**, "
        + (f"its configuration over {info['confirmation']['seeds']} training seeds: mean "
           f"**{format_number(info['confirmation']['mean'])}** ± "
           f"{format_number(info['confirmation']['std'])}"
           if info["confirmation"] else "from one training seed (not confirmed)")
        + ". At the checkpoint's validation"
        + (f" (epoch {info['epoch']}):" if info.get("epoch") is not None else ":"),
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {key} | {format_number(value)} |" for key, value in info["metrics"].items()),
        "",
        *listening_section(config, info.get("listening")),
        "## Searched hyperparameters",
        "",
        "| parameter | value |",
        "|---|---|",
        *(f"| {key} | {format_number(value)} |" for key, value in info["params"].items()),
        "",
        "All hyperparameters of the checkpoint are in `hparams.json`; the tuner's config "
        "in `config.yaml`.",
        "",
        "## Files",
        "",
        f"- `{CHECKPOINT_FILE}`: the checkpoint (model, optimiser, hyperparameters)",
        f"- `{HPARAMS_FILE}`, `config.yaml`",
        f"- `{sample}`: a spoken sample (vocoder: {info.get('vocoder', 'not recorded')})",
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


def listening_section(config: Config, listening: dict[str, Any] | None) -> list[str]:
    """The card's lines on the version's listening evaluation and the requirements."""
    lines = ["## Listening", ""]
    if listening is None:
        lines.append("Not evaluated as a listener would (python -m train.evaluate).")
    else:
        lines += ["Judged as a listener would (`python -m train.evaluate`: free-running "
                  "speech through the vocoder, held-out and hard sentences):", "",
                  "| measure | value |", "|---|---|",
                  *(f"| {key} | {format_number(value)} |" for key, value in listening.items())]
    requirements = config.registry.parsed_requirements
    if requirements:
        failed = unmet(requirements, listening)
        lines += ["", "Requirements (" + ", ".join(map(str, requirements)) + "): "
                  + (f"**fails** {'; '.join(failed)}" if failed else "all met")]
    return [*lines, ""]


def format_number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
