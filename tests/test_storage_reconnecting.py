"""Every storage call a worker makes rides out a database restart, the calls that Optuna's
cache layer makes to the RDB storage behind it included (tuner_core.storage.reconnecting)."""

from __future__ import annotations

import inspect
import re

import optuna
from optuna.storages._cached_storage import _CachedStorage

from tuner_core.storage.reconnecting import ReconnectingStorage

# What the RDB storage answers from memory, without the database.
NO_DATABASE = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}


def test_every_call_the_cache_layer_makes_to_the_database_is_ridden_out():
    called = set(re.findall(r"self\._backend\.(\w+)", inspect.getsource(_CachedStorage)))
    assert called, "Optuna's cache layer no longer reads as this test expects"
    plain = {name for name in called - NO_DATABASE
             if getattr(ReconnectingStorage, name) is getattr(optuna.storages.RDBStorage, name)}
    assert plain == set()
