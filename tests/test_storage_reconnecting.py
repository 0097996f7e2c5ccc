"""Every storage call a worker makes rides out a database restart, the calls that Optuna's
cache layer makes to the RDB storage behind it included (tuner_core.storage.reconnecting)."""

from __future__ import annotations

import inspect
import re

import optuna

from tuner_core.storage.reconnecting import ReconnectingStorage

# What the RDB storage answers from memory, without the database.
NO_DATABASE = {"get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}


def test_every_call_the_cache_layer_makes_to_the_database_is_ridden_out(tmp_path):
    # The cache layer Optuna puts in front of an RDB storage, found through the public API.
    cache = type(optuna.storages.get_storage(
        optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")))
    called = set(re.findall(r"self\._backend\.(\w+)", inspect.getsource(cache)))
    assert called, "Optuna's cache layer no longer reads as this test expects"
    plain = {name for name in called - NO_DATABASE
             if getattr(ReconnectingStorage, name) is getattr(optuna.storages.RDBStorage, name)}
    assert plain == set()
