"""A token model's vocabulary: one string per token id, text to ids and back. Torch-free.

A format 2 manifest may carry ``"vocabulary"``: a list of distinct, non-empty strings, one per
id of the token input that sampled feedback feeds (its length is that input's vocabulary size).
`Vocabulary.encode` splits text by greedy longest match over the tokens (so a vocabulary of
characters and one of words or sub-words both work); `decode` concatenates the tokens of ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import DtypeError, InputValueError, ShapeError

TEXT_OUTPUT = "text_output"  # the generated tokens' text, where a model has a vocabulary (served, bulk rows)
MAX_TOKEN_CHARS = 256  # one token's length: a vocabulary of whole sentences is not one we wrote


class TooManyTokens(InputValueError):
    """A text that holds more tokens than its reader takes (`Vocabulary.encode`'s ``limit``)."""


def check_tokens(value: Any, error: type[Exception] = InputValueError, where: str = "vocabulary") -> tuple[str, ...]:
    """``value`` as a tuple of distinct, non-empty strings of valid Unicode (each at most
    MAX_TOKEN_CHARS characters); ``error`` naming the first that is not, and where."""
    if not isinstance(value, (list, tuple)):
        raise error(f"{where} must be a list of strings, one per token id, got {type(value).__name__}")
    if not value:
        raise error(f"{where} must hold at least one string")
    seen: dict[str, int] = {}
    for index, token in enumerate(value):
        if not isinstance(token, str):
            raise error(f"{where}[{index}] must be a string, got {type(token).__name__}")
        if not 1 <= len(token) <= MAX_TOKEN_CHARS:
            raise error(f"{where}[{index}] must be a string of 1 to {MAX_TOKEN_CHARS} characters, got {len(token)}")
        try:
            token.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: no text holds it, no terminal prints it
            raise error(f"{where}[{index}] is not valid Unicode text (a lone surrogate)") from None
        if token in seen:
            raise error(f"{where} must hold distinct strings: {token!r:.40} is id {seen[token]} and id {index}")
        seen[token] = index
    return tuple(value)


def check_vocabulary_size(tokens: Sequence[str], size: Any, error: type[Exception], where: str = "vocabulary") -> None:
    """``error`` unless there is one token per id of a token input of vocabulary ``size``
    (None: the model has no token input that sampled feedback feeds)."""
    if size is None:
        raise error(
            f"{where} is for a model whose generation samples its next token (a logits output fed back into "
            "a tokens input); this model has none"
        )
    if len(tokens) != size:
        raise error(f"{where} must hold one string per token id: {size}, got {len(tokens)}")


class Vocabulary:
    """The strings of a token input's ids: ``tokens[i]`` is id ``i``'s text."""

    __slots__ = ("tokens", "_ids", "_longest")

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens: tuple[str, ...] = check_tokens(tokens)
        self._ids = {token: index for index, token in enumerate(self.tokens)}
        self._longest = max(map(len, self.tokens), default=0)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and other.tokens == self.tokens

    def __hash__(self) -> int:
        return hash(self.tokens)

    def __repr__(self) -> str:
        shown = ", ".join(repr(t) for t in self.tokens[:8])
        return f"Vocabulary({self.size} tokens: {shown}{', ...' if self.size > 8 else ''})"

    def encode(self, text: str, limit: int | None = None) -> np.ndarray:
        """The ids of ``text``, int64 (n,): at each position the longest token that matches.
        InputValueError naming the first position no token matches; TooManyTokens once the text
        holds more than ``limit`` ids (None: no limit), refused before any work when its length
        alone says so (every token is at most the longest token's length)."""
        if not isinstance(text, str):
            raise InputValueError(f"encode takes text (a str), got {type(text).__name__}")
        ids, position, ids_of, longest = [], 0, self._ids, self._longest
        if limit is not None and len(text) > limit * longest:
            raise TooManyTokens(f"the text has {len(text)} characters: more than {limit} tokens, the limit")
        while position < len(text):
            if limit is not None and len(ids) == limit:
                raise TooManyTokens(f"the text holds more than {limit} tokens, the limit")
            for length in range(min(longest, len(text) - position), 0, -1):
                index = ids_of.get(text[position : position + length])
                if index is not None:
                    ids.append(index)
                    position += length
                    break
            else:
                raise InputValueError(
                    f"text position {position} ({text[position]!r}) starts no token of the vocabulary "
                    f"({self.size} tokens)"
                )
        return np.asarray(ids, dtype=np.int64)

    def decode(self, ids: Any) -> str:
        """The text of token ids (a 1-D sequence of integers, or one integer): their tokens joined.
        InputValueError for an id outside 0 .. size - 1."""
        array = np.asarray(ids)
        if array.size == 0:
            return ""
        if array.dtype.kind not in "iu":
            raise DtypeError(f"decode takes integer token ids, got dtype {array.dtype}")
        if array.ndim > 1:
            raise ShapeError(f"decode takes one sequence of ids (1-D), got shape {array.shape}")
        flat = array.reshape(-1)
        bad = (flat < 0) | (flat >= self.size)
        if bad.any():
            first = int(np.argmax(bad))
            raise InputValueError(
                f"token id {int(flat[first])} at position {first} is outside the vocabulary (0 to {self.size - 1})"
            )
        return self.decode_drawn(flat.tolist())

    def decode_drawn(self, ids: Sequence[int]) -> str:
        """The text of ids its caller drew itself from this vocabulary's logits (Python ints, each in
        0 .. size - 1): `decode` without its checks, for a server's hot path (a few us, not tens)."""
        tokens = self.tokens
        return "".join([tokens[i] for i in ids])
