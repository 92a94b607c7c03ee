"""Who calls `rnn serve`: the bearer tokens it accepts and the owner of the request in progress.

With several tokens (one per tenant: `rnn serve --token-file` with a token per line) a sequence
belongs to the token that started it. The fronts check a request's token against every token
(`Tokens.owner`: constant-time, no early exit) and set `CALLER` to that token's owner tag, the
SHA-256 of the token in hex (never the token itself: the tag is what sequences and state files
keep); the engine keeps every sequence under (owner, id), so another token's sequence does not
exist for a request (`sequences.slot`). With one token or none the tag is "": one tenant, every
client reaches every sequence, as before sequences had owners. `CALLER` is a context variable:
each request runs in its own task (uvicorn's per request, grpc.aio's per call) and the tasks it
starts copy it; the Ray front passes it to the replica with the request."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from contextvars import ContextVar

from runtime.errors import InputValueError

from .protocol import bearer_matches

# The owner tag of the request in progress ("": no tokens, or one token)
CALLER: ContextVar[str] = ContextVar("rnn_serve_caller", default="")
OWNER_CHARS = 64  # an owner tag: SHA-256 in hex


def owner_tag(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_owner_tag(value: object) -> bool:
    """Whether ``value`` is an owner tag (64 lowercase hex digits), as a state file holds one."""
    return isinstance(value, str) and len(value) == OWNER_CHARS and all(c in "0123456789abcdef" for c in value)


class Tokens:
    """The bearer tokens a server accepts: one, or several (each a tenant, owning the sequences
    it starts). ``owners``: the tags a request can carry (("",) for one token)."""

    def __init__(self, tokens: Iterable[str]) -> None:
        distinct = list(dict.fromkeys(tokens))  # a token listed twice is one token
        if not distinct or any(not token.strip() for token in distinct):
            raise InputValueError("the token is empty: give a secret, or no token to serve without one")
        self._tokens = tuple(token.encode() for token in distinct)
        self.several = len(distinct) > 1
        self._tags = tuple(owner_tag(token) if self.several else "" for token in distinct)
        self.owners = frozenset(self._tags)

    @classmethod
    def of(cls, given: str | Iterable[str] | Tokens | None) -> Tokens | None:
        """The tokens of a server option: a token, several, or None (no token: no check)."""
        if given is None or isinstance(given, Tokens):
            return given
        return cls([given] if isinstance(given, str) else list(given))

    def __len__(self) -> int:
        return len(self._tokens)

    def owner(self, value: bytes) -> str | None:
        """The owner tag of the token an ``Authorization`` header (or gRPC metadata) value
        carries, or None when it carries none of them. Compares with every token, whichever
        matches (`protocol.bearer_matches` is constant-time): the time says nothing of which."""
        found = None
        for token, tag in zip(self._tokens, self._tags):
            if bearer_matches(value, token) and found is None:
                found = tag
        return found
