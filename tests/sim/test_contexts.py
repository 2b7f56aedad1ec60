import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from sim.contexts import ContextSets, wrap_angle


@given(st.floats(-1e4, 1e4, allow_nan=False))
def test_wrap_angle_lands_in_range_and_keeps_the_direction(angle: float) -> None:
    wrapped = float(wrap_angle(angle))
    assert -math.pi <= wrapped < math.pi
    assert math.isclose(math.cos(wrapped), math.cos(angle), abs_tol=1e-9)
    assert math.isclose(math.sin(wrapped), math.sin(angle), abs_tol=1e-9)


def test_default_train_set_is_c4() -> None:
    np.testing.assert_allclose(ContextSets().angles("train"), [0.0, math.pi / 2, -math.pi, -math.pi / 2])


@settings(max_examples=30, deadline=None)
@given(
    train=st.lists(st.floats(0.0, 359.0), min_size=1, max_size=4, unique=True),
    margin=st.floats(0.0, 20.0),
    seed=st.integers(0, 1000),
)
def test_held_out_sets_keep_their_margin(train: list[float], margin: float, seed: int) -> None:
    sets = ContextSets(train_deg=tuple(train), held_out_margin_deg=margin, test_count=50, seed=seed)
    train_rad = sets.angles("train")
    for name in ("test", "validation"):
        held_out = sets.angles(name)
        assert held_out.shape == (50 if name == "test" else 100,)
        distance = np.abs(wrap_angle(held_out[:, None] - train_rad[None, :])).min(axis=1)
        assert distance.min() >= math.radians(margin) - 1e-12


def test_held_out_sets_are_deterministic_and_distinct() -> None:
    sets = ContextSets()
    np.testing.assert_array_equal(sets.angles("test"), ContextSets().angles("test"))
    assert not np.allclose(sets.angles("test"), sets.angles("validation"))
    assert not np.allclose(sets.angles("test"), ContextSets(seed=1).angles("test"))


def test_test_angles_cover_the_circle() -> None:
    test = ContextSets().angles("test")
    assert np.histogram(test, bins=4, range=(-math.pi, math.pi))[0].min() >= 10


def test_empty_train_set_is_rejected() -> None:
    with pytest.raises(ValidationError, match="at least one training context"):
        ContextSets(train_deg=())
