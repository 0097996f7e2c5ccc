"""The project as a package: ``pip install .`` gives working console scripts, and what
pyproject.toml declares is what the pinned environment (requirements*.txt) provides."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

from tests.deadlines import scaled

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGES = ("train", "tuner_core", "bot")


def test_pip_install_gives_working_console_scripts(tmp_path):
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    source = tmp_path / "source"
    for name in PACKAGES:
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The new environment sees this one's packages (the pinned dependencies) through a
    # .pth file, so the test installs the project alone: offline, in seconds.
    purelib = Path(subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    (purelib / "pinned_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-build-isolation", "--no-index", "--ignore-installed",
                    str(source)], check=True, timeout=scaled(300))
    assert sorted(path.name for path in purelib.iterdir() if path.name in
                  (*PACKAGES, "tests", "bench")) == sorted(PACKAGES)

    # Run away from the checkout, so that only the installed copy can be imported.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    def run(*command: str) -> str:
        proc = subprocess.run([str(venv / "bin" / command[0]), *command[1:]], cwd=outside,
                              env=env, capture_output=True, text=True, timeout=scaled(120))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stdout

    assert run("python", "-c", "import tuner_core; print(tuner_core.__file__)").startswith(
        str(purelib))
    assert "usage: smart-tuner [-h] COMMAND" in run("smart-tuner", "--help")
    assert "--study NAME" in run("smart-tuner", "delete", "--help")
    assert "learning_rate: float = 0.001" in run("smart-tuner-train", "--list-hparams")
    assert "usage: smart-tuner-bot" in run("smart-tuner-bot", "--help")


def _declared() -> list[Requirement]:
    extras = [entry for group in PYPROJECT["optional-dependencies"].values() for entry in group]
    return [requirement for entry in [*PYPROJECT["dependencies"], *extras]
            if (requirement := Requirement(entry)).name != PYPROJECT["name"]]


def test_declared_requirements_admit_the_pinned_environment():
    for requirement in _declared():
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), \
            f"{requirement} does not admit the installed {installed}"
    # torch exactly: a range would let pip replace an installed CUDA build with another.
    assert "torch==2.13.0" in PYPROJECT["dependencies"]


def test_every_pinned_runtime_package_is_declared():
    declared = {requirement.name.lower() for requirement in _declared()}
    pinned = [Requirement(line).name.lower()
              for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    # The full MLflow is the `mlflow` extra; its client alone is a dependency.
    assert set(pinned) <= declared, set(pinned) - declared
