"""runtime.jsonfile: one typed line for every way a small JSON file of a folder can be hostile."""

from __future__ import annotations

import pytest

from runtime.errors import ArtifactError, ManifestError
from runtime.jsonfile import parse_json


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{", "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"1" * 5000, "too many digits"),
        (b'{"x": NaN}', "not a JSON number"),
        (b'{"x": -Infinity}', "not a JSON number"),
    ],
)
def test_hostile_bytes_are_one_typed_line_that_quotes_nothing(raw, message):
    with pytest.raises(ManifestError, match=message) as refused:
        parse_json(raw, "manifest.json", ManifestError)
    assert "\n" not in str(refused.value) and "111111" not in str(refused.value)


def test_valid_json_and_allowed_constants():
    assert parse_json(b'{"a": [1, 2.5, null]}', "x.json", ArtifactError) == {"a": [1, 2.5, None]}
    assert parse_json(b'{"max_abs": Infinity}', "verify.json", ArtifactError, finite_only=False) == {
        "max_abs": float("inf")
    }
