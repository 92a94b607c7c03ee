"""Which folder a command may load: the pins it is held to (--digest, --public-key), its loading, signing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runtime.errors import InputValueError


@dataclass(frozen=True)
class Loading:
    """How a running command loads its folder: the execution provider, whether NaN and infinity
    are run, and what the folder is pinned to (a manifest digest, a signing key, neither)."""

    device: str = "cpu"
    allow_nonfinite: bool = False
    digest: str | None = None
    public_key: Path | None = None

    @property
    def pinned(self) -> bool:
        return self.digest is not None or self.public_key is not None


def pinned_digest(folder: str | os.PathLike, digest: str | None, public_key: Path | None) -> str | None:
    """The manifest digest the folder must have: --digest, or the one its verified signature gives
    (both: they must agree); None when the caller pins nothing."""
    if public_key is None:
        return digest
    from toolkit.signing import verify_signature

    verified = verify_signature(folder, public_key=public_key)
    if digest is not None and digest != verified:
        raise InputValueError(f"--digest {digest[:12]}... differs from the signed manifest's {verified[:12]}...")
    return verified


def load_model(folder: str | os.PathLike, loading: Loading) -> Any:
    """The folder through the torch-free runtime (`runtime.Model`): its manifest pinned where
    asked, then the sha256 of every file checked."""
    import runtime

    pinned = pinned_digest(folder, loading.digest, loading.public_key)
    return runtime.load(folder, device=loading.device, allow_nonfinite=loading.allow_nonfinite, digest=pinned)


def sign(
    folder: Path, private_key: Path, password_env: str | None, certificate: Path | None, chain: tuple[Path, ...]
) -> tuple[Path, str]:
    """`rnn sign`: writes FOLDER/model.sig; (its path, the manifest digest). The key's password is
    read from the environment variable ``password_env``, never from the command line."""
    from runtime.manifest import manifest_digest
    from toolkit.signing import sign_folder

    password = None
    if password_env is not None:
        if password_env not in os.environ:
            raise InputValueError(f"--password-env {password_env}: that environment variable is not set")
        password = os.environ[password_env]
    path = sign_folder(folder, private_key, password=password, certificate=certificate, certificate_chain=chain)
    return path, manifest_digest(folder)


def verify_signature(folder: Path, public_key: Path | None, chain: tuple[Path, ...]) -> str:
    """`rnn verify-signature`: the verified manifest digest (a ToolkitError if it does not verify)."""
    from toolkit.signing import verify_signature as verify

    return verify(folder, public_key=public_key, certificate_chain=chain)
