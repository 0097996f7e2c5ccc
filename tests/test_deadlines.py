"""One factor scales every test deadline: the variable's, raised to the machine's load."""

import os

import pytest

from tests.deadlines import SCALE_VARIABLE, scaled, time_scale


@pytest.fixture
def load_per_core(monkeypatch: pytest.MonkeyPatch):
    """Set the machine's load per core seen by the factor (2 cores)."""
    def set_load(per_core: float) -> None:
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        monkeypatch.setattr(os, "getloadavg", lambda: (2 * per_core, 0.0, 0.0))
    set_load(0.0)
    return set_load


def test_the_default_factor_is_one(monkeypatch, load_per_core):
    monkeypatch.delenv(SCALE_VARIABLE, raising=False)
    assert time_scale() == 1
    assert scaled(30) == 30


def test_the_variable_multiplies_deadlines(monkeypatch, load_per_core):
    monkeypatch.setenv(SCALE_VARIABLE, "2.5")
    assert scaled(30) == 75


def test_a_factor_below_the_load_per_core_is_raised_to_it(monkeypatch, load_per_core):
    monkeypatch.setenv(SCALE_VARIABLE, "2")
    load_per_core(3.0)
    assert time_scale() == 3
    load_per_core(1.5)
    assert time_scale() == 2


def test_a_factor_that_is_not_a_number_names_the_variable(monkeypatch, load_per_core):
    monkeypatch.setenv(SCALE_VARIABLE, "slow")
    with pytest.raises(ValueError, match=f"^{SCALE_VARIABLE} must be a number, not 'slow'$"):
        scaled(30)
