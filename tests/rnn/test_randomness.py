"""rnn.randomness: a block that draws, seeds or fails leaves the global generators as they were."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from rnn.randomness import preserved_global_rng


def test_the_global_generators_come_back_as_they_were_even_after_a_failure():
    torch.manual_seed(8)
    np.random.seed(8)
    random.seed(8)
    expected = (torch.rand(2), np.random.rand(2), random.random())
    torch.manual_seed(8)
    np.random.seed(8)
    random.seed(8)
    with pytest.raises(RuntimeError, match="the block failed"), preserved_global_rng():
        torch.manual_seed(1), np.random.seed(1), random.seed(1)
        torch.rand(5), np.random.rand(5), random.random()
        raise RuntimeError("the block failed")
    got = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


def test_a_seed_makes_the_block_draw_the_same_numbers_whatever_the_callers_state():
    draws = []
    for caller_seed in (1, 2):
        torch.manual_seed(caller_seed)
        with preserved_global_rng(seed=5):
            draws.append(torch.rand(3))
    assert torch.equal(draws[0], draws[1])
