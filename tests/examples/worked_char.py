"""The README's worked character generator (examples/char_generator) as the browser page and the
Node example tests run it: trained briefly with the example's seeds, exported with its alphabet as
the vocabulary (a module-scoped fixture, imported by each test module that uses it)."""

from __future__ import annotations

import pytest

CHAR_EPOCHS = 8  # enough for text that is not one character repeated; about 4 s on one thread
CHAR_PROMPT = "Alice was "


@pytest.fixture(scope="module")
def char_generator(tmp_path_factory):
    """(the example's module, its folder): the worked character GRU (Embedding, a two-layer GRU of
    64, a linear head), trained CHAR_EPOCHS epochs on its text and exported with its signature and
    its alphabet as the vocabulary."""
    import torch

    from export import export_module

    from .test_worked_examples import load_example

    example = load_example("char_generator")
    torch.manual_seed(0)
    module = example.make()
    example.train(module, example.encode(example.TEXT), CHAR_EPOCHS)
    root = tmp_path_factory.mktemp("char_generator")
    return example, export_module(module, root / "model", **example.SIGNATURE, vocabulary=example.ALPHABET)
