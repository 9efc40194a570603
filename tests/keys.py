"""Signing key pairs for the tests and bench/signing.py: generated, never stored."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def ec_pem(curve: ec.EllipticCurve | None = None) -> tuple[bytes, bytes]:
    """(private key PEM, PKCS8 unencrypted; public key PEM) of a new EC key (P-256 unless `curve`)."""
    key = ec.generate_private_key(curve or ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


def key_pair(folder: Path, name: str = "signing") -> tuple[Path, Path]:
    """A new key pair written as `<name>-key.pem` and `<name>-key.pub` in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    private, public = ec_pem()
    private_path, public_path = folder / f"{name}-key.pem", folder / f"{name}-key.pub"
    private_path.write_bytes(private)
    public_path.write_bytes(public)
    return private_path, public_path
