"""runtime.sampling: the Sampler's arguments, its own generator, and the pinned draw on hand-made logits."""

from __future__ import annotations

import numpy as np
import pytest

from runtime.errors import InputValueError, ShapeError
from runtime.sampling import STRATEGIES, U_MAX, Sampler, draw_tokens


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("beam",), {}, "strategy must be one of"),
        ((3,), {}, "strategy must be one of"),
        (("temperature",), {"temperature": 0.0}, "temperature must be a number from 1e-06 to 1e30"),
        (("temperature",), {"temperature": float("nan")}, "temperature must be a number from 1e-06 to 1e30"),
        (("temperature",), {"temperature": True}, "temperature must be a number from 1e-06 to 1e30"),
        (("temperature",), {"temperature": 1e-45}, "for the most likely token use strategy 'greedy'"),
        (("top_k",), {}, "strategy 'top_k' needs top_k, an int >= 1"),
        (("top_k",), {"top_k": 0}, "strategy 'top_k' needs top_k, an int >= 1"),
        (("top_k",), {"top_k": 2.0}, "strategy 'top_k' needs top_k, an int >= 1"),
        (("top_p",), {}, r"strategy 'top_p' needs top_p, a number in \(0, 1\]"),
        (("top_p",), {"top_p": 0.0}, r"strategy 'top_p' needs top_p, a number in \(0, 1\]"),
        (("top_p",), {"top_p": 1.5}, r"strategy 'top_p' needs top_p, a number in \(0, 1\]"),
        (("temperature",), {"top_k": 3}, "top_k is used only by strategy 'top_k'"),
        (("top_k",), {"top_k": 3, "top_p": 0.5}, "top_p is used only by strategy 'top_p'"),
        (("greedy",), {"seed": -1}, "seed must be None or an int >= 0"),
        (("greedy",), {"seed": "7"}, "seed must be None or an int >= 0"),
    ],
)
def test_bad_arguments_are_refused_in_one_line(args, kwargs, message):
    with pytest.raises(InputValueError, match=message) as caught:
        Sampler(*args, **kwargs)
    assert "\n" not in str(caught.value)


def test_properties_and_repr():
    sampler = Sampler("top_k", temperature=0.8, top_k=5, seed=0)
    assert (sampler.strategy, sampler.greedy, sampler.temperature, sampler.top_k, sampler.top_p, sampler.seed) == (
        "top_k",
        False,
        0.8,
        5,
        None,
        0,
    )
    assert repr(sampler) == "Sampler('top_k', temperature=0.8, top_k=5, seed=0)"
    assert repr(Sampler("greedy")) == "Sampler('greedy', seed=None)"
    assert Sampler("greedy").greedy and set(STRATEGIES) == {"greedy", "temperature", "top_k", "top_p"}


def test_uniforms_come_from_the_samplers_own_generator():
    np.random.seed(1)
    before = np.random.get_state()[1].copy()
    a, b = Sampler(seed=7), Sampler(seed=7)
    first = a.uniforms(5, 3)
    assert first.dtype == np.float32 and first.shape == (5, 3) and 0 <= first.min() and first.max() < 1
    np.testing.assert_array_equal(first, b.uniforms(5, 3))
    assert not np.array_equal(first, a.uniforms(5, 3))  # the generator advances
    np.testing.assert_array_equal(np.random.get_state()[1], before)  # the global one is untouched
    greedy = Sampler("greedy", seed=7)
    np.testing.assert_array_equal(greedy.uniforms(4, 2), np.zeros((4, 2), np.float32))
    with pytest.raises(InputValueError, match="steps must be an int >= 0"):
        a.uniforms(-1, 2)


def test_feeds_give_the_fused_forms_settings_with_filters_off_as_v_and_1():
    feeds = Sampler("temperature", temperature=0.5).feeds(11)
    assert feeds["temperature"].dtype == np.float32 and feeds["temperature"].tolist() == [0.5]
    assert feeds["top_k"].dtype == np.int64 and feeds["top_k"].tolist() == [11]
    assert feeds["top_p"].dtype == np.float32 and feeds["top_p"].tolist() == [1.0]
    assert Sampler("top_k", top_k=40).feeds(11)["top_k"].tolist() == [11]
    assert Sampler("top_k", top_k=3).feeds(11)["top_k"].tolist() == [3]
    assert Sampler("top_p", top_p=0.25).feeds(11)["top_p"].tolist() == [0.25]


def test_greedy_takes_the_first_maximum():
    logits = np.array([[0.0, 2.0, 2.0, 1.0], [5.0, 5.0, 5.0, 5.0], [-1.0, -3.0, -0.5, -0.5]], np.float32)
    tokens = Sampler("greedy").draw(logits, np.zeros(3, np.float32))
    assert tokens.dtype == np.int64 and tokens.tolist() == [1, 0, 2]


def test_the_inverse_cdf_draw_at_chosen_uniforms():
    logits = np.log(np.array([[0.25, 0.5, 0.25]], np.float32))  # cdf 0.25, 0.75, 1
    sampler = Sampler("temperature")
    drawn = [int(sampler.draw(logits, np.array([u], np.float32))[0]) for u in (0.0, 0.2499, 0.25, 0.7, 0.75, 0.99)]
    assert drawn == [0, 0, 1, 1, 2, 2]  # the first id whose cdf exceeds u * total
    assert int(sampler.draw(logits, np.array([1.0], np.float32))[0]) == 2  # u >= 1 clipped to U_MAX
    assert U_MAX == np.float32(1) - np.spacing(np.float32(0.5))


def test_filtered_ids_are_never_drawn_and_ties_at_the_threshold_are_kept():
    logits = np.array([[1.0, 3.0, 3.0, 2.0, 0.0]], np.float32)
    u_all = np.linspace(0, 1, 401, dtype=np.float32)
    batch = np.repeat(logits, len(u_all), axis=0)
    top1 = draw_tokens(batch, u_all, 1.0, top_k=1)
    assert set(top1.tolist()) == {1, 2}  # the two tied maxima are both kept
    top3 = draw_tokens(batch, u_all, 1.0, top_k=3)
    assert set(top3.tolist()) == {1, 2, 3}
    nucleus = draw_tokens(batch, u_all, 1.0, top_p=0.5)  # p ~ .05 .38 .38 .14 .02: {1, 2} reach 0.5
    assert set(nucleus.tolist()) == {1, 2}
    everything = draw_tokens(batch, u_all, 1.0, top_p=1.0)
    assert set(everything.tolist()) == {0, 1, 2, 3, 4}
    # u = 0 and the largest u never land on a zero-probability id
    masked = np.array([[-np.inf, 0.0, 1.0, -np.inf]], np.float32)
    edges = draw_tokens(np.repeat(masked, 3, axis=0), np.array([0.0, U_MAX, 1.0], np.float32), 1.0)
    assert edges.tolist() == [1, 2, 2]


def test_temperature_draws_follow_the_softmax():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal(6).astype(np.float32)
    sampler = Sampler("temperature", temperature=0.7, seed=3)
    u = sampler.uniforms(1, 20000)[0]
    tokens = sampler.draw(np.repeat(logits[None], len(u), axis=0), u)
    z = logits.astype(np.float64) / 0.7
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    np.testing.assert_allclose(np.bincount(tokens, minlength=6) / len(u), p, atol=0.015)


def test_draw_refuses_wrong_shapes():
    sampler = Sampler(seed=0)
    with pytest.raises(ShapeError, match=r"logits must be \(batch, vocabulary\)"):
        sampler.draw(np.zeros(4, np.float32), np.zeros(1, np.float32))
    with pytest.raises(ShapeError, match=r"u must be \(batch,\) = \(2,\)"):
        sampler.draw(np.zeros((2, 4), np.float32), np.zeros(3, np.float32))


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, "greedy"),
        ({"seed": 3}, "temperature"),
        ({"temperature": 0.7}, "temperature"),
        ({"top_k": 5}, "top_k"),
        ({"top_p": 0.9, "seed": 1}, "top_p"),
        ({"strategy": "greedy", "seed": 2}, "greedy"),
        ({"strategy": "top_p", "top_p": 0.5, "top_k": 3}, "top_p"),
    ],
)
def test_one_rule_says_which_strategy_a_callers_options_ask_for(options, expected):
    """Greedy unless an option asks for a draw: the CLI, the server and the examples all use it."""
    from runtime.sampling import draw_strategy

    strategy = options.pop("strategy", None)
    assert draw_strategy(strategy, **options) == expected
