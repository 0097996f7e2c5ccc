"""The ``evaluation`` block (a trial judged as a listener would) and ``registry.requirements``.

``evaluation`` says how each completed trial's best checkpoint is judged by
``python -m train.evaluate`` (:mod:`tuner_core.trial.evaluation`); ``registry.requirements``
bounds that judgement's metrics (:mod:`tuner_core.rules.requirements`). A listened objective or
requirement with the evaluation off, or a CER with the recogniser off, is a config error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, field_validator

from train.tacotron2.vocoder import spec_problem
from tuner_core.config.blocks import Section, null_as_empty
from tuner_core.config.paths import FOLDER
from tuner_core.config.paths import path as resolved_path
from tuner_core.config.problems import Loc, custom_errors, unknown_keys
from tuner_core.rules.requirements import LISTENING_METRICS, parse_requirement

ENGLISH, OFF = "en-us", "off"


def _known_requirements(requirements: dict[str, Any]) -> dict[str, Any]:
    problems: list[tuple[Loc, str]] = unknown_keys(requirements, LISTENING_METRICS)
    for metric, expression in requirements.items():
        try:
            parse_requirement(metric, expression)
        except ValueError as error:
            problems.append(((metric,), str(error)))
    if problems:
        raise custom_errors(problems)
    return requirements


# {metric: "<= 1.5", ...}: every metric one of LISTENING_METRICS, every bound a comparison.
Requirements = Annotated[dict[str, Any], BeforeValidator(null_as_empty),
                         AfterValidator(_known_requirements)]


class EvaluationConfig(Section):
    """Each completed trial's best checkpoint judged as a listener would (train.evaluate)."""

    enabled: bool = True
    # en-us (pocketsphinx's bundled model), off (no CER), or a pocketsphinx model folder.
    recognizer: str = ENGLISH
    vocoder: str | None = None  # None: the trial's own vocoder hyperparameter
    # Validation utterances judged where the dataset has no heldout.csv (a user's corpus).
    sentences: int = Field(3, ge=1)

    @field_validator("recognizer")
    @classmethod
    def _recognizer_model(cls, recognizer: str, info: ValidationInfo) -> str:
        if recognizer in (ENGLISH, OFF):
            return recognizer
        folder = resolved_path(recognizer, Path((info.context or {}).get(FOLDER) or Path.cwd()))
        if not folder.is_dir():
            raise ValueError(f"{folder} is not a pocketsphinx model folder; "
                             f"use {ENGLISH}, {OFF}, or a folder")
        return str(folder)

    @field_validator("vocoder")
    @classmethod
    def _known_vocoder(cls, vocoder: str | None) -> str | None:
        if vocoder is not None and (problem := spec_problem(vocoder)):
            raise ValueError(problem)
        return vocoder


def evaluation_measures_asked(evaluation: EvaluationConfig, info: ValidationInfo
                              ) -> EvaluationConfig:
    """The config's ``evaluation`` validator (it reads the blocks before it): a listened
    objective or a requirement needs the evaluation on, and a CER its recogniser."""
    asked = [(f"registry.requirements.{metric}", metric)
             for metric in getattr(info.data.get("registry"), "requirements", {})]
    optimization = info.data.get("optimization")
    if optimization is not None and optimization.listened:
        asked.append(("optimization.objective_metric", optimization.objective_metric))
    problems: list[tuple[Loc, str]] = []
    for where, metric in asked:
        if not evaluation.enabled:
            problems.append((("enabled",), f"{where} ({metric}) is measured by the "
                                           "evaluation; set enabled: true"))
        elif metric.startswith("cer") and evaluation.recognizer == OFF:
            problems.append((("recognizer",), f"{where} ({metric}) needs the recogniser; "
                                              f"use {ENGLISH} or a model folder"))
    if problems:
        raise custom_errors(problems)
    return evaluation
