"""The deploy recipes (deploy/): every file parses, every command they run is one this
project's command lines accept, the config they share validates with the variables each
recipe sets, and no file holds a secret. Docker Compose and a Kubernetes validator check the
files too where they are installed (docker-compose; kubernetes-validate, from PyPI)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

import bot.__main__
import tuner_core.__main__
from tuner_core.config import load_config
from tuner_core.config.loading import ENVIRONMENT_DEFAULTS
from tuner_core.config.location import CONFIG_VARIABLE

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
CONFIG = DEPLOY / "config.yaml"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
DOCKERFILE = DEPLOY / "compose" / "Dockerfile"
ENV_EXAMPLE = DEPLOY / "compose" / ".env.example"
SECRET_TEMPLATE = DEPLOY / "kubernetes" / "secret.yaml.template"
SBATCH = DEPLOY / "slurm" / "workers.sbatch"

YAML_FILES = sorted({*DEPLOY.rglob("*.yaml"), SECRET_TEMPLATE})
SHELL_FILES = sorted(DEPLOY.rglob("*.sbatch"))
# A Telegram bot token: the bot's numeric id, a colon, 35 characters of its secret.
TOKEN = re.compile(r"\d{6,}:[A-Za-z0-9_-]{30,}")
# ${VAR}, ${VAR:-default}, ${VAR:?message}, as the config and the shell write them.
REFERENCE = re.compile(r"\$\{(\w+)(?::([-?])([^}]*))?\}")
DOCKERFILE_INSTRUCTIONS = {"FROM", "ARG", "ENV", "WORKDIR", "COPY", "ADD", "RUN", "USER",
                           "CMD", "ENTRYPOINT", "EXPOSE", "VOLUME", "LABEL", "HEALTHCHECK",
                           "STOPSIGNAL", "SHELL", "ONBUILD"}


def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kubernetes_resources() -> list[dict]:
    return [doc for path in sorted((DEPLOY / "kubernetes").iterdir()) for doc in documents(path)]


def containers(kind: str | None = None) -> list[dict]:
    """The Kubernetes containers, of the Deployments and StatefulSets named ``*-kind``."""
    return [container for doc in kubernetes_resources()
            if doc["kind"] in ("Deployment", "StatefulSet")
            and (kind is None or doc["metadata"]["name"].endswith(f"-{kind}"))
            for container in doc["spec"]["template"]["spec"]["containers"]]


def compose_services() -> dict[str, dict]:
    """The Compose services with the shared block (``<<: *tuner``) merged in."""
    return documents(COMPOSE)[0]["services"]


def sbatch_command() -> list[str]:
    """The worker command line the Slurm script execs, ``${VAR:-default}`` as its default."""
    text = SBATCH.read_text().replace("\\\n", " ")
    line = next(line for line in text.splitlines() if line.startswith("exec "))
    return shlex.split(REFERENCE.sub(lambda m: m[3] or "", line))[1:]


def commands() -> list[tuple[str, list[str]]]:
    """Every command a recipe runs in the project's image, as (where, argv)."""
    found = [(f"compose {name}", service["command"])
             for name, service in compose_services().items()
             if service.get("image", "").startswith("smart-tuner")]
    found += [(f"kubernetes {c['name']}", c["command"])
              for c in containers() if c["image"].startswith("smart-tuner")]
    found.append(("slurm", sbatch_command()))
    cmd = next(line for line in DOCKERFILE.read_text().splitlines() if line.startswith("CMD "))
    found.append(("Dockerfile", yaml.safe_load(cmd.removeprefix("CMD "))))
    return found


def test_every_file_parses():
    assert YAML_FILES and SHELL_FILES
    for path in YAML_FILES:
        assert documents(path), path
    for path in SHELL_FILES:
        done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    instruction = None
    for line in DOCKERFILE.read_text().splitlines():
        if line.strip() and not line.startswith("#") and not (instruction or "").endswith("\\"):
            assert line.split()[0] in DOCKERFILE_INSTRUCTIONS, line
        instruction = line if line.strip() else None
    for line in DOCKERFILE.read_text().splitlines():
        if line.startswith("COPY ") and not line.startswith("COPY . "):
            assert (ROOT / line.split()[1]).exists(), line


def test_each_command_is_one_the_project_or_mlflow_accepts():
    seen = set()
    for where, argv in commands():
        if argv[0].endswith("python") and argv[1:3] == ["-m", "tuner_core"]:
            args = tuner_core.__main__.build_parser().parse_args(argv[3:])
            # --set overrides name keys of the config the command reads
            load_config(CONFIG, environ=recipe_environment(), overrides=args.overrides)
            seen.add(args.command)
        elif argv[:2] == ["python", "run_bot.py"]:
            bot.__main__.parse_args(argv[2:])
            seen.add("bot")
        elif argv[:2] == ["mlflow", "server"]:
            from mlflow.cli import cli
            server = cli.commands["server"]
            context = click.Context(server)
            server.parse_args(context, argv[2:])
            seen.add("mlflow")
        else:
            pytest.fail(f"{where}: an unknown command {argv}")
    assert {"worker", "bot", "mlflow"} <= seen


def test_standing_workers_get_gpus():
    worker = compose_services()["worker"]
    assert worker["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "--follow" in worker["command"]
    (pod,) = containers("worker")
    assert pod["resources"]["limits"]["nvidia.com/gpu"] >= 1 and "--follow" in pod["command"]
    assert "--follow" in sbatch_command()
    assert re.search(r"^#SBATCH --gres=gpu:1$", SBATCH.read_text(), re.MULTILINE)
    assert re.search(r"^#SBATCH --array=", SBATCH.read_text(), re.MULTILINE)


def recipe_environment() -> dict[str, str]:
    """What the recipes set, with a stand-in for each secret."""
    return {"SMART_TUNER_STORAGE": "postgresql://tuner:stand-in@db/smart_tuner",
            "MLFLOW_TRACKING_URI": "http://mlflow:5000"}


def required_variables() -> set[str]:
    """The variables deploy/config.yaml reads without a default."""
    return {m[1] for m in REFERENCE.finditer(CONFIG.read_text()) if not m[2]}


def test_the_config_validates_and_each_recipe_sets_what_it_needs():
    config = load_config(CONFIG, environ=recipe_environment())
    assert config.storage_url.startswith("postgresql+psycopg://")
    assert config.tracking_uri == "http://mlflow:5000"
    assert required_variables() == set(recipe_environment())

    for name in ("bot", "worker"):
        environment = compose_services()[name]["environment"]
        assert required_variables() <= set(environment), name
        assert environment[CONFIG_VARIABLE] == "/app/deploy/config.yaml"
        assert "../config.yaml:/app/deploy/config.yaml:ro" in compose_services()[name]["volumes"]
    secret = documents(SECRET_TEMPLATE)[0]["stringData"]
    for container in containers("worker") + containers("bot"):
        names = {e["name"] for e in container.get("env", [])}
        if container.get("envFrom"):
            names |= set(secret)
        assert required_variables() <= names, container["name"]
    guarded = {m[1] for m in REFERENCE.finditer(SBATCH.read_text()) if m[2] == "?"}
    assert required_variables() <= guarded
    assert sbatch_command()[sbatch_command().index("--config") + 1] == "deploy/config.yaml"


def test_every_variable_a_recipe_sets_is_read_by_the_project():
    """A misspelt variable would be ignored without a word: each one a recipe sets is
    read by deploy/config.yaml, by the config loader, or names the config."""
    read = ({m[1] for m in REFERENCE.finditer(CONFIG.read_text())}
            | set(ENVIRONMENT_DEFAULTS.values()) | {CONFIG_VARIABLE})
    compose_set = {name for service in compose_services().values()
                   if service.get("image", "").startswith("smart-tuner")
                   for name in service.get("environment", {})}
    kubernetes_set = {e["name"] for c in containers("worker") + containers("bot")
                      for e in c.get("env", [])}
    kubernetes_set |= set(documents(SECRET_TEMPLATE)[0]["stringData"]) - {
        "POSTGRES_PASSWORD", "MLFLOW_BACKEND_STORE_URI"}  # postgres's and mlflow's
    slurm_set = set(re.findall(r"export (\w+)=|: \"\$\{(\w+)", SBATCH.read_text()))
    slurm_set = {name for pair in slurm_set for name in pair if name}
    for where, names in (("compose", compose_set), ("kubernetes", kubernetes_set),
                         ("slurm", slurm_set)):
        assert names and names <= read, (where, names - read)


def test_no_file_holds_a_secret():
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            assert not TOKEN.search(path.read_text()), path
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            assert not value or not any(word in name for word in ("TOKEN", "PASSWORD")), line
    for value in documents(SECRET_TEMPLATE)[0]["stringData"].values():
        assert "<" in value, value  # a placeholder to fill in
    assert ".env" in (DEPLOY / "compose" / ".gitignore").read_text().split()


def test_the_readme_shows_each_recipe():
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploying"):]
    section = section[:section.index("\n## ", 1)]
    for path in [COMPOSE, DOCKERFILE, ENV_EXAMPLE, SECRET_TEMPLATE, SBATCH, CONFIG]:
        assert str(path.relative_to(ROOT)) in section, path
    assert "kubectl apply -f deploy/kubernetes/" in section
    assert "docker compose" in section and "sbatch deploy/slurm/workers.sbatch" in section


@pytest.mark.skipif(not shutil.which("docker-compose"), reason="docker-compose is not installed")
def test_docker_compose_accepts_the_compose_file():
    environ = {"PATH": "/usr/bin:/bin", "POSTGRES_PASSWORD": "stand-in",
               "TELEGRAM_BOT_TOKEN": "stand-in", "TELEGRAM_ALLOWED_USERS": "1"}
    done = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "--quiet"],
                          env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    missing = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "--quiet"],
                             env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
                             timeout=60)
    assert missing.returncode != 0 and "set POSTGRES_PASSWORD in .env" in missing.stderr


@pytest.mark.skipif(not shutil.which("kubernetes-validate"),
                    reason="kubernetes-validate (PyPI) is not installed")
def test_kubernetes_validate_accepts_the_manifests(tmp_path):
    secret = tmp_path / "secret.yaml"
    secret.write_text(SECRET_TEMPLATE.read_text())
    manifests = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
    done = subprocess.run(["kubernetes-validate", "--strict", "--quiet", *map(str, manifests),
                           str(secret)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
