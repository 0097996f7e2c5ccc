"""Completing the record of a finished trial, which Optuna keeps read-only.

Some of what belongs on a trial is only known once it has finished: why a trial whose
worker died failed (the worker that notices learns it just after Optuna failed the
trial), and that retention deleted a trial's checkpoint. Optuna refuses to change a
finished trial (``UpdateFinishedTrialError``), so such user attributes are written into
its storage's own table, as Optuna writes them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import optuna
from optuna.storages._rdb.models import TrialUserAttributeModel


def amend_user_attrs(storage: optuna.storages.RDBStorage, study_name: str, number: int,
                     attrs: Mapping[str, Any]) -> None:
    """Set user attributes of trial ``number`` of the study, finished or not."""
    trial_id = storage.get_trial_id_from_study_id_trial_number(
        storage.get_study_id_from_name(study_name), number)
    table = TrialUserAttributeModel.__table__
    with storage.engine.begin() as connection:  # one transaction: all or nothing
        for key, value in attrs.items():
            connection.execute(table.delete().where(table.c.trial_id == trial_id,
                                                    table.c.key == key))
            connection.execute(table.insert().values(trial_id=trial_id, key=key,
                                                     value_json=json.dumps(value)))
