"""Signs artifact folders with the OpenSSF model signing format and loads only what verifies.

The signature (``model.sig`` in the folder, a Sigstore bundle written by the `model-signing`
package) covers ``manifest.json``, every file the manifest lists and the self-check data under
``test_data/``, as an exact set: a file added there after signing fails verification. Files the
runtime never reads (plots, CSVs, ``verify.json``) are left out, so drawing a plot does not break
a signature. Key-based (an elliptic-curve key pair, PEM) and
certificate-based signing work offline; nothing here reaches a network.

Loading a signed folder is `load_signed`: the signature is verified, then the folder is loaded
with `runtime.load(..., digest=...)` pinned to the manifest digest that was verified, so a
manifest swapped after the check is refused at load (no time-of-check gap). The runtime itself
stays numpy + onnxruntime only; this module needs the ``sign`` extra
(``pip install 'rnn-toolkit[sign]'``).
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import runtime
from runtime.errors import InputValueError, IntegrityError, MissingDependencyError
from runtime.manifest import MANIFEST_NAME, TEST_DATA_DIR, check_files, manifest_digest, read_manifest

SIGNATURE_NAME = "model.sig"  # in the folder, beside the manifest (the OpenSSF tooling's default name)


def _model_signing() -> Any:
    try:
        return importlib.import_module("model_signing")
    except ImportError as error:
        raise MissingDependencyError(
            f"signing needs the model-signing package ({error.name} is missing); install the sign extra: "
            "pip install 'rnn-toolkit[sign]'"
        ) from None


def signed_files(folder: str | os.PathLike) -> list[str]:
    """The folder's files a signature covers (relative paths): the manifest, every listed file
    and the test data."""
    folder = Path(folder)
    names = [MANIFEST_NAME, *(entry.name for entry in read_manifest(folder).files)]
    test_data = folder / TEST_DATA_DIR
    if test_data.is_dir():
        names += sorted(str(p.relative_to(folder)) for p in test_data.rglob("*") if p.is_file())
    return names


def _unsigned_paths(folder: Path) -> list[Path]:
    """Everything in ``folder`` that a signature leaves out (the signature itself included)."""
    covered = set(signed_files(folder))
    return [p for p in folder.rglob("*") if p.is_file() and str(p.relative_to(folder)) not in covered]


def _hashing_config(folder: Path) -> Any:
    model_signing = _model_signing()
    return model_signing.hashing.Config().set_ignored_paths(paths=_unsigned_paths(folder), ignore_git_paths=False)


def sign_folder(
    folder: str | os.PathLike,
    private_key: str | os.PathLike,
    *,
    password: str | None = None,
    certificate: str | os.PathLike | None = None,
    certificate_chain: tuple[str | os.PathLike, ...] = (),
) -> Path:
    """Signs ``folder`` with ``private_key`` (PEM, elliptic curve); with ``certificate`` (and its
    ``certificate_chain``), a certificate-based signature. Writes FOLDER/model.sig and returns it.

    The folder's files are checked against its manifest first: a folder is only signed as the
    manifest describes it."""
    folder = Path(folder)
    check_files(folder, read_manifest(folder))
    model_signing = _model_signing()
    signature = folder / SIGNATURE_NAME
    try:
        config = model_signing.signing.Config()
        if certificate is None:
            config.use_elliptic_key_signer(private_key=private_key, password=password)
        else:
            config.use_certificate_signer(
                private_key=private_key, signing_certificate=certificate, certificate_chain=list(certificate_chain)
            )
        config.set_hashing_config(_hashing_config(folder)).sign(folder, signature)
    except (ValueError, TypeError, AttributeError, OSError) as error:  # a key or certificate it cannot use
        raise InputValueError(f"cannot sign {str(folder)!r}: {_one_line(error)}") from None
    return signature


def verify_signature(
    folder: str | os.PathLike,
    *,
    public_key: str | os.PathLike | None = None,
    certificate_chain: tuple[str | os.PathLike, ...] = (),
) -> str:
    """Verifies FOLDER/model.sig with ``public_key`` (or, certificate-based, against
    ``certificate_chain``); returns the digest of the manifest that was verified. IntegrityError
    when the signature is missing or does not verify.

    The covered files are first copied, each read once, into a private temporary folder, and the
    signature is checked there: the digest returned is that of the very manifest bytes that
    verified, whatever happens to the folder meanwhile (pin it: `load_signed`)."""
    folder = Path(folder)
    if (public_key is None) == (not certificate_chain):
        raise IntegrityError("verify a signature with a public key or with a certificate chain (one of them)")
    signature = folder / SIGNATURE_NAME
    if not signature.is_file() or signature.is_symlink():
        raise IntegrityError(f"{str(folder)!r} has no {SIGNATURE_NAME}: it is not signed (rnn sign)")
    model_signing = _model_signing()
    with tempfile.TemporaryDirectory(prefix="rnn-signature-") as private:
        copy = Path(private) / "folder"
        digest = _private_copy(folder, copy)
        try:
            config = model_signing.verifying.Config()
            if public_key is not None:
                config.use_elliptic_key_verifier(public_key=public_key)
            else:
                config.use_certificate_verifier(certificate_chain=list(certificate_chain))
            # every covered file hashed, not only those the signature lists: a file added under
            # test_data/ after signing is an extra file, and the signature must cover the exact set
            config.set_hashing_config(_hashing_config(copy)).set_ignore_unsigned_files(False)
            config.verify(copy, copy / SIGNATURE_NAME)
        except Exception as error:  # model-signing raises ValueError and several library types for a bad signature
            raise IntegrityError(f"the signature of {str(folder)!r} does not verify: {_mismatch(error)}") from None
    return digest


def _private_copy(folder: Path, copy: Path) -> str:
    """Copies the signature and the files it covers (regular files inside the folder only) into
    ``copy``; returns the digest of the manifest bytes copied."""
    names = [*signed_files(folder), SIGNATURE_NAME]
    for name in names:
        source = folder / name
        if source.is_symlink() or not source.is_file():
            raise IntegrityError(f"{name!r} in {str(folder)!r} must be a regular file, not a link or anything else")
        target = copy / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(source.read_bytes())
    return manifest_digest(copy)


def _mismatch(error: BaseException) -> str:
    """model-signing's reason, one line; the files it found beyond the signed set named as such."""
    extra = re.search(r"Extra files found in model '[^']*': ([^\"\]]+)", str(error))
    if extra:
        return f"{extra.group(1)} not covered by the signature (added after signing)"
    return _one_line(error)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def load_signed(
    folder: str | os.PathLike,
    *,
    public_key: str | os.PathLike | None = None,
    certificate_chain: tuple[str | os.PathLike, ...] = (),
    **load_options: Any,
) -> runtime.Model:
    """`runtime.load` of a folder whose signature verifies, pinned to the verified manifest."""
    digest = verify_signature(folder, public_key=public_key, certificate_chain=certificate_chain)
    return runtime.load(folder, digest=digest, **load_options)
