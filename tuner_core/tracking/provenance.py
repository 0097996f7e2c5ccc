"""What every run was made from, as MLflow records it: the code's version and the dataset.

- The code: the git commit of the checkout the tuner runs from, as MLflow's
  ``mlflow.source.git.commit`` tag (the UI's "Version"); "unknown" for an installed package
  or a checkout without git.
- The dataset: MLflow's dataset tracking (a run's "Datasets used"): the corpus named by its
  folder (or filelist), with its path as source and, as digest, a hash of its metadata
  (``metadata.csv`` of an LJSpeech folder, or the filelist itself), so runs on the same
  data show the same dataset and an edited corpus a new digest.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from mlflow.data.meta_dataset import MetaDataset
from mlflow.data.sources import LocalArtifactDatasetSource
from mlflow.entities import DatasetInput, InputTag
from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT, MLFLOW_GIT_COMMIT

from tuner_core.config.location import PROJECT_ROOT

UNKNOWN = "unknown"


@functools.cache
def code_version() -> str:
    """The commit checked out at the project's root, else ``"unknown"``."""
    try:
        import git  # GitPython (an MLflow dependency), which refuses to load without git
    except ImportError:
        return UNKNOWN
    try:
        return git.Repo(PROJECT_ROOT).head.commit.hexsha
    except (git.GitError, ValueError, OSError):  # not a repository; no commit yet
        return UNKNOWN


def code_tags() -> dict[str, str]:
    return {MLFLOW_GIT_COMMIT: code_version()}


def metadata_file(dataset: Path) -> Path:
    """The file that lists a corpus's utterances: an LJSpeech folder's ``metadata.csv``,
    else the filelist itself."""
    return dataset / "metadata.csv" if dataset.is_dir() else dataset


def dataset_input(dataset: Path) -> DatasetInput | None:
    """The corpus at ``dataset`` as a training input of a run; None when its metadata
    cannot be read (the trainer will say why)."""
    try:
        content = metadata_file(dataset).read_bytes()
    except OSError:
        return None
    name = dataset.name if dataset.is_dir() else dataset.stem
    described = MetaDataset(LocalArtifactDatasetSource(str(dataset.resolve())), name=name,
                            digest=hashlib.sha256(content).hexdigest()[:16])
    # What mlflow.log_input does with a dataset, through the worker's own client.
    return DatasetInput(described._to_mlflow_entity(),
                        tags=[InputTag(MLFLOW_DATASET_CONTEXT, "training")])
