"""The project as a package: ``pip install .`` gives working console scripts (each naming
itself in its --help) and a starter config, building leaves nothing git does not ignore, and
what pyproject.toml declares is what the pinned environment (requirements*.txt) provides."""

import importlib.machinery
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import types
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.deadlines import scaled

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGES = ("train", "tuner_core", "bot")


def checkout_copy(folder: Path) -> Path:
    """The files of this checkout that git tracks or would (not ignored), as they are now,
    in a new git repository at ``folder`` with all of them added."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True, check=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (ROOT / name).is_file():  # not one deleted in the working tree
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)
    subprocess.run(["git", "init", "--quiet", str(folder)], check=True)
    subprocess.run(["git", "add", "--all"], cwd=folder, check=True)
    return folder


def untracked(checkout: Path) -> list[str]:
    """What git sees in ``checkout`` that is neither added nor ignored."""
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=checkout, capture_output=True, text=True, check=True).stdout
    return [line[3:] for line in status.splitlines() if line.startswith("??")]


@pytest.mark.skipif(not (ROOT / ".git").exists(), reason="needs a git checkout")
def test_pip_install_gives_working_console_scripts(tmp_path):
    # Built in a copy of the checkout (a git repository of its own), as a person builds in
    # theirs: the build's leftovers (build/, dist/, *.egg-info) must all be ignored by git.
    source = checkout_copy(tmp_path / "source")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    # The new environment sees this one's packages (the pinned dependencies) through a
    # .pth file, so the test installs the project alone: offline, in seconds.
    purelib = Path(subprocess.check_output(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        text=True).strip())
    (purelib / "pinned_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    offline = ["--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    *offline, "--ignore-installed", str(source)], check=True,
                   timeout=scaled(300))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", *offline, "--wheel-dir",
                    str(source / "dist"), str(source)], check=True, timeout=scaled(300))
    (wheel,) = (source / "dist").glob("*.whl")
    assert (source / "build").is_dir() and untracked(source) == []
    # The shipped config, which init copies, travels as package data.
    assert zipfile.ZipFile(wheel).read("tuner_core/config/smart_tuner.yaml") == (
        ROOT / "config" / "smart_tuner.yaml").read_bytes()
    assert sorted(path.name for path in purelib.iterdir() if path.name in
                  (*PACKAGES, "tests", "bench")) == sorted(PACKAGES)

    # Run away from the checkout, so that only the installed copy can be imported.
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "SMART_TUNER_CONFIG")}
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
    # Outside a checkout: init writes the default config, whose state folder is beside it.
    assert "else ./smart_tuner.yaml" in " ".join(run("smart-tuner", "--help").split())
    assert "wrote smart_tuner.yaml" in run("smart-tuner", "init")
    checked = subprocess.run([str(venv / "bin" / "smart-tuner"), "check"], cwd=outside, env=env,
                             capture_output=True, text=True, timeout=scaled(120))
    assert f"[ok] state folder: {outside}/.state (new" in checked.stdout, checked.stderr
    assert f"[FAIL] dataset: {outside}/data/LJSpeech-1.1" in checked.stdout
    assert "learning_rate: float = 0.001" in run("smart-tuner-train", "--list-hparams")
    assert "usage: smart-tuner-bot" in run("smart-tuner-bot", "--help")
    # Each command's --help names it as it was invoked, in its usage and its examples.
    for script, module, example in [
            ("smart-tuner-train", "train", "--data DATA --out RUN_DIR"),
            ("smart-tuner-synthesize", "train.synthesize", "--checkpoint RUN_DIR/best.pt"),
            ("smart-tuner-corpus", "train.corpus", "")]:
        shown = run(script, "--help")
        assert shown.startswith(f"usage: {script} [-h]"), shown
        assert f"{script} {example}".strip() in shown and f"python -m {module}" not in shown
        as_module = run("python", "-m", module, "--help")
        assert as_module.startswith(f"usage: python -m {module} [-h]"), as_module
        assert f"python -m {module} {example}".strip() in as_module
        assert script not in as_module

    metadata = run("python", "-c", "import importlib.metadata as m; d = m.metadata('smart-tuner');"
                   " print(d['License-Expression'], d.get_all('License-File'))")
    assert metadata.split(maxsplit=1) == ["MIT", "['LICENSE']\n"]
    assert "Smart Tuner contributors" in (ROOT / "LICENSE").read_text()


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


def test_the_program_name_follows_how_the_process_was_started(monkeypatch):
    from train.arguments import described, program_name

    def started(module: str | None, script: str) -> None:
        main = types.ModuleType("__main__")
        main.__spec__ = importlib.machinery.ModuleSpec(module, None) if module else None
        monkeypatch.setitem(sys.modules, "__main__", main)
        monkeypatch.setattr(sys, "argv", [script, "--help"])

    started("train.synthesize", "/x/train/synthesize.py")  # python -m train.synthesize
    assert program_name("train.synthesize") == "python -m train.synthesize"
    started("train.__main__", "/x/train/__main__.py")  # python -m train
    assert program_name("train") == "python -m train"
    started("pytest.__main__", "/x/pytest/__main__.py")  # another package's python -m
    assert program_name("train") is None
    started(None, "/venv/bin/smart-tuner-train")  # the console script
    assert program_name("train") is None
    doc = "  python -m train --data D\n  python -m train.render --checkpoint C"
    assert described(doc, "train") == doc.replace("python -m train ", "smart-tuner-train ", 1)
