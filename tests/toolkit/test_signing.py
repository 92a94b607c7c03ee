"""toolkit.signing: OpenSSF model signing of artifact folders (key-based, offline) and loading
only what verifies, pinned to the verified manifest."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("model_signing", reason="the sign extra (model-signing) is not installed")

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

import runtime  # noqa: E402
from runtime.errors import IntegrityError  # noqa: E402
from runtime.manifest import file_entry, manifest_digest, read_manifest, write_manifest  # noqa: E402
from toolkit.signing import SIGNATURE_NAME, load_signed, sign_folder, signed_files, verify_signature  # noqa: E402

from ..conftest import COMMITTED  # noqa: E402


def key_pair(folder, name="key"):
    """An elliptic-curve (P-256) key pair as PEM files, made here: nothing downloaded."""
    private = ec.generate_private_key(ec.SECP256R1())
    private_path, public_path = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


@pytest.fixture()
def signed(tmp_path):
    folder = tmp_path / "signed"
    shutil.copytree(COMMITTED, folder)
    private, public = key_pair(tmp_path)
    assert sign_folder(folder, private) == folder / SIGNATURE_NAME
    return folder, public


def test_a_signed_folder_verifies_and_loads_pinned_to_its_manifest(signed):
    folder, public = signed
    assert "manifest.json" in signed_files(folder) and "step.onnx" in signed_files(folder)
    assert any(name.startswith("test_data/") for name in signed_files(folder))
    assert verify_signature(folder, public_key=public) == manifest_digest(folder)
    model = load_signed(folder, public_key=public)
    assert model.manifest_digest == manifest_digest(folder)
    np.testing.assert_array_equal(model.generate(0.5, 5)[0], runtime.load(COMMITTED).generate(0.5, 5)[0])


def test_files_the_runtime_never_reads_do_not_break_the_signature(signed):
    folder, public = signed
    (folder / "prediction.png").write_bytes(b"redrawn")
    (folder / "notes.txt").write_text("added after signing")
    verify_signature(folder, public_key=public)


def test_a_changed_manifest_or_listed_file_fails_even_when_rehashed(signed):
    folder, public = signed
    manifest = read_manifest(folder)  # the attack of issue 10: change a file and re-hash it in the manifest
    (folder / "config.json").write_text((folder / "config.json").read_text().replace('"seed": 0', '"seed": 1'))
    files = tuple(file_entry(folder, f.name, f.role) if f.name == "config.json" else f for f in manifest.files)
    write_manifest(folder, type(manifest)(**{**manifest.__dict__, "files": files}))
    runtime.load(folder)  # consistent with its own manifest ...
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_signature(folder, public_key=public)  # ... but not what was signed
    with pytest.raises(IntegrityError):
        load_signed(folder, public_key=public)


def test_another_key_an_unsigned_folder_and_a_missing_key_are_refused(signed, tmp_path):
    folder, _ = signed
    _, other = key_pair(tmp_path, "other")
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_signature(folder, public_key=other)
    (folder / SIGNATURE_NAME).unlink()
    with pytest.raises(IntegrityError, match="not signed"):
        verify_signature(folder, public_key=other)
    with pytest.raises(IntegrityError, match="public key or with a certificate chain"):
        verify_signature(folder)


def test_the_cli_signs_verifies_and_loads_only_what_verifies(signed, tmp_path):
    from click.testing import CliRunner

    from toolkit.cli import cli

    folder, public = signed
    runner = CliRunner()
    private, _ = key_pair(tmp_path, "cli")
    signed_again = runner.invoke(cli, ["sign", str(folder), "--key", str(private)])
    assert signed_again.exit_code == 0 and f"digest {manifest_digest(folder)}" in signed_again.stdout
    public = tmp_path / "cli.pub.pem"
    checked = runner.invoke(cli, ["verify-signature", str(folder), "--public-key", str(public)])
    assert checked.exit_code == 0 and manifest_digest(folder) in checked.stdout
    ran = runner.invoke(cli, ["generate", str(folder), "--steps", "3", "--public-key", str(public)])
    assert ran.exit_code == 0 and ran.stdout.startswith("step,y")
    _, other = key_pair(tmp_path, "other")
    refused = runner.invoke(cli, ["generate", str(folder), "--steps", "3", "--public-key", str(other)])
    assert refused.exit_code == 2 and "does not verify" in refused.stderr and refused.stdout == ""


def certificate_authority(folder, name):
    """A CA certificate and a code-signing leaf certificate it issued, with the leaf's key (PEM
    files made here, valid for a month)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def subject(common_name):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def usage(signing):
        flags = dict.fromkeys(
            (
                "content_commitment",
                "key_encipherment",
                "data_encipherment",
                "key_agreement",
                "encipher_only",
                "decipher_only",
            ),
            False,
        )
        return x509.KeyUsage(digital_signature=signing, key_cert_sign=not signing, crl_sign=not signing, **flags)

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def certificate(subject_name, public_key, ca, extensions):
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject(subject_name))
            .issuer_name(subject(f"{name} ca"))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(ca_key, hashes.SHA256())

    ca = certificate(f"{name} ca", ca_key.public_key(), True, [(usage(False), True)])
    leaf = certificate(
        f"{name} signer",
        leaf_key.public_key(),
        False,
        [(usage(True), True), (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)],
    )
    paths = {kind: folder / f"{name}-{kind}.pem" for kind in ("ca", "leaf", "key")}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths["leaf"].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths["key"].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def test_certificate_based_signing_verifies_against_its_chain_only(tmp_path):
    folder = tmp_path / "certified"
    shutil.copytree(COMMITTED, folder)
    ours, theirs = certificate_authority(tmp_path, "ours"), certificate_authority(tmp_path, "theirs")
    sign_folder(folder, ours["key"], certificate=ours["leaf"], certificate_chain=(ours["ca"],))
    assert verify_signature(folder, certificate_chain=(ours["ca"],)) == manifest_digest(folder)
    with pytest.raises(IntegrityError, match="does not verify"):
        verify_signature(folder, certificate_chain=(theirs["ca"],))


def test_a_manifest_swapped_while_the_signature_is_checked_is_never_loaded(signed, monkeypatch):
    # The signature is checked on a private copy of the covered files, and the folder is then
    # loaded pinned to the digest of the manifest that verified: swapping manifest.json in the
    # folder during the check (an attacker timing it with inotify) gets a refusal, not a load.
    import model_signing

    folder, public = signed
    genuine = (folder / "manifest.json").read_bytes()
    forged = genuine.replace(b'"initial": [\n        0.0', b'"initial": [\n        5.0', 1)
    assert forged != genuine
    real_verify = model_signing.verifying.Config.verify

    def swapping_verify(self, model_path, signature_path):
        (folder / "manifest.json").write_bytes(forged)
        return real_verify(self, model_path, signature_path)

    monkeypatch.setattr(model_signing.verifying.Config, "verify", swapping_verify)
    with pytest.raises(IntegrityError, match="pinned digest"):
        load_signed(folder, public_key=public)


def test_a_key_the_signer_cannot_use_is_one_line(tmp_path):
    from click.testing import CliRunner
    from cryptography.hazmat.primitives.asymmetric import rsa

    from toolkit.cli import cli

    folder = tmp_path / "f"
    shutil.copytree(COMMITTED, folder)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (tmp_path / "text.pem").write_text("not a key")
    for path in ("rsa.pem", "text.pem"):
        result = CliRunner().invoke(cli, ["sign", str(folder), "--key", str(tmp_path / path)])
        assert result.exit_code == 2 and result.stderr.startswith("error: cannot sign"), result.output
        assert result.stderr.strip().count("\n") == 0 and not (folder / SIGNATURE_NAME).exists()
    refused = CliRunner().invoke(cli, ["verify-signature", str(folder), "--public-key", str(tmp_path / "text.pem")])
    assert refused.exit_code == 2 and refused.stderr.strip().count("\n") == 0
