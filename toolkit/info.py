"""`rnn info`: what an artifact folder holds, its manifest digest, its integrity and whether verify.json verified it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rnn.data import open_regular
from runtime.errors import ArtifactError, ToolkitError
from runtime.jsonfile import parse_json
from runtime.manifest import (
    TORCHSCRIPT_SKIPPED_KEY,
    VERIFY_NAME,
    Manifest,
    check_files,
    read_manifest_pinned,
)

MAX_VERIFY_BYTES = 16 << 20  # verify.json: tens of KB
VOCABULARY_SHOWN = 12  # tokens of a vocabulary the text shows (--json has them all)
TOKEN_SHOWN_CHARS = 16  # characters of each


@dataclass(frozen=True)
class FolderInfo:
    """What `rnn info` reports of a folder: its manifest and that manifest's sha256 (what --digest
    pins), the files' integrity, and what its verify.json says of this manifest."""

    folder: Path
    manifest: Manifest
    digest: str
    integrity: str  # "ok" or "FAILED: why"
    verified: bool | None  # None: no verify.json, or one that cannot be read or is about another manifest
    verify_error: str | None
    user_data: Any

    def to_dict(self) -> dict[str, Any]:
        """`rnn info --json`: the manifest, ``manifest_sha256`` (the digest, to pin with --digest) and the checks."""
        document = {
            **self.manifest.to_dict(),
            "manifest_sha256": self.digest,
            "integrity": self.integrity,
            "verified": self.verified,
            "verified_on_user_data": self.user_data,
        }
        return {**document, "verify_error": self.verify_error} if self.verify_error else document


def describe_folder(folder: Path, digest: str | None) -> FolderInfo:
    """The folder's manifest (pinned to ``digest`` where given), its files checked against their
    sha256, and its verify.json read without trusting it: an unreadable one is reported, not raised."""
    manifest, manifest_sha256 = read_manifest_pinned(folder, digest)
    try:
        check_files(folder, manifest)
        integrity = "ok"
    except ToolkitError as error:
        integrity = f"FAILED: {error}"
    verified, verify_error, user_data = None, None, None
    try:
        report = read_verify_report(folder)
        if report is not None and report.get("manifest_sha256") != manifest_sha256:
            verify_error = "verify.json is about another manifest: the folder changed since; run rnn verify"
        else:
            verified = None if report is None else report["passed"]
            user_data = None if report is None else report.get("user_data")
    except ToolkitError as error:
        verify_error = str(error)
    return FolderInfo(Path(folder), manifest, manifest_sha256, integrity, verified, verify_error, user_data)


def info_lines(info: FolderInfo) -> list[str]:
    """`rnn info`'s text: one line per fact, a label in the first ten columns."""
    manifest, model = info.manifest, info.manifest.model
    # hidden_size is the first state's size: it describes a model of one state tensor, or a
    # built-in cell (every state that size); the state lines below give each tensor's own size
    omitted = {"kind", TORCHSCRIPT_SKIPPED_KEY} | ({"hidden_size"} if model.get("kind") == "custom" else set())
    described = "  ".join(f"{key}={value}" for key, value in model.items() if key not in omitted)
    lines = [
        f"folder     {info.folder}",
        f"digest     {info.digest}  (sha256 of manifest.json: pin it with --digest)",
        f"model      {model.get('kind')}  {described}",
    ]
    for label, specs in (("inputs", manifest.inputs), ("outputs", manifest.outputs)):
        lines.append(f"{label:<10} " + ", ".join(f"{t.name} {t.describe()}" for t in specs))
    lines += [f"state      {spec.name} -> {spec.output} {spec.describe()}" for spec in manifest.state]
    if manifest.format_version >= 2:
        closed = manifest.closed_loop
        loop = "none" if closed is None else f"{closed.output} -> {closed.input} ({closed.via})"
        lines.append(f"layout     {manifest.layout}   feedback {loop}")
    if manifest.vocabulary is not None:
        lines.append(f"vocabulary {vocabulary_summary(manifest.vocabulary)}")
    if model.get(TORCHSCRIPT_SKIPPED_KEY):
        lines.append(f"torchscript not written: {model[TORCHSCRIPT_SKIPPED_KEY]}")
    lines.append(f"opset      {manifest.opset}   format version {manifest.format_version}")
    for entry in manifest.files:
        lines.append(f"file       {entry.name:<22} {entry.role:<17} {entry.size:>8} B  sha256 {entry.sha256[:16]}")
    lines.append("versions   " + "  ".join(f"{k} {v}" for k, v in sorted(manifest.versions.items())))
    lines.append(f"integrity  {info.integrity}")
    return lines + _verified_lines(info)


def vocabulary_summary(tokens: tuple[str, ...], shown: int = VOCABULARY_SHOWN) -> str:
    """``N tokens: 'a' 'b' ...``: the size and the first ``shown`` tokens as Python literals (a
    newline shows as '\\n'), each cut to TOKEN_SHOWN_CHARS characters."""
    first = " ".join(
        repr(t[:TOKEN_SHOWN_CHARS]) + ("..." if len(t) > TOKEN_SHOWN_CHARS else "") for t in tokens[:shown]
    )
    return f"{len(tokens)} tokens: {first}{' ...' if len(tokens) > shown else ''}"


def _verified_lines(info: FolderInfo) -> list[str]:
    verified = info.verified
    status = "not yet (run rnn verify)" if verified is None else ("passed" if verified else "FAILED")
    if verified is not None:  # anyone can write verify.json: it is a report, not a proof
        status += " (as verify.json reports for this manifest; not authenticated: rerun rnn verify to know)"
    lines = [f"verified   {f'unknown ({info.verify_error})' if info.verify_error else status}"]
    if verified is None:
        return lines
    user_data = info.user_data
    if isinstance(user_data, dict):
        shape = "x".join(str(n) for n in user_data.get("shape", []))
        sha = str(user_data.get("sha256"))[:16]
        return [*lines, f"user data  {user_data.get('source')} (shape {shape}, sha256 {sha})"]
    return [*lines, "user data  none (rnn verify --data FILE checks the forms on your own inputs)"]


def read_verify_report(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The verification report ``verify.json`` in ``folder``; None where there is none.

    ArtifactError if it is there but unreadable: not a regular file, too large, not UTF-8, not
    JSON (deep nesting and huge numbers included), not an object, or without a boolean
    ``passed``. Its contents are never quoted in the error.
    """
    path = Path(folder) / VERIFY_NAME
    if not path.exists() and not path.is_symlink():
        return None
    with open_regular(path, ArtifactError, VERIFY_NAME) as handle:
        raw = handle.read(MAX_VERIFY_BYTES + 1)
    if len(raw) > MAX_VERIFY_BYTES:
        raise ArtifactError(f"{VERIFY_NAME} is larger than {MAX_VERIFY_BYTES} bytes")
    document = parse_json(raw, VERIFY_NAME, ArtifactError, finite_only=False)  # a failed check reports Infinity
    if not isinstance(document, dict):
        raise ArtifactError(f"{VERIFY_NAME} must be a JSON object, got {type(document).__name__}")
    if not isinstance(document.get("passed"), bool):
        raise ArtifactError(f"{VERIFY_NAME} has no boolean 'passed'")
    return document
