"""Runs code without touching the caller's global random generators (torch, numpy, random)."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def preserved_global_rng(seed: int | None = None) -> Iterator[None]:
    """Saves torch's CPU generator, numpy's global generator and Python's ``random``, and restores
    them on the way out, whatever the block did (a user's factory that seeds, a module that draws).

    With ``seed``, torch's global generator is seeded with it inside the block, so that whatever
    draws from it there (a user's module, an exporter) draws the same numbers on every run.
    """
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.default_generator.manual_seed(seed)  # the CPU generator only: the one forked
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)
