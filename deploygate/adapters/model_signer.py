"""Signing and verifying Hub folders with the OpenSSF model-signing library (`model_signing` 1.1.1).

The only module that imports model_signing, sigstore and cryptography for signing; it turns their
errors into deploygate's. A signature is model-signing's own format: a Sigstore bundle whose DSSE
envelope holds an in-toto statement; its predicate lists every file with the SHA-256 of the whole
file ("files" serialization), so the stock `model_signing verify` CLI checks what deploygate signs.

model-signing hashes a folder itself; deploygate signs from digests it already has
(`sign_digests`): the Hub folder's SHA-256s are computed once for deploygate.json, and a streaming
push never has the whole folder on disk (a Hub LFS oid is the same SHA-256). Building the manifest
from digests uses model_signing's `manifest` and `_signing` modules, pinned with the package.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from deploygate.core.errors import ConfigError, SignatureInvalid, SigningError, first_line
from deploygate.core.signing import UNSIGNED_PATHS, folder_digests

log = logging.getLogger("deploygate.signing")

HASH = "sha256"
# model-signing supports these curves only (its _check_supported_ec_key)
CURVES = ("secp256r1", "secp384r1", "secp521r1")
KEY_FIX = (
    "give signing-key an unencrypted EC private key in PEM (P-256, P-384 or P-521), as a path or as the "
    "PEM text from a secret; make one with `openssl ecparam -name prime256v1 -genkey -noout | "
    "openssl pkcs8 -topk8 -nocrypt -out signing-key.pem`"
)


def sign_digests(digests: Mapping[str, str], signer: Any, *, model_name: str) -> bytes:
    """model.sig's bytes for files given as {relative POSIX path: SHA-256 hex of the whole file}.

    The same signature model-signing writes when it hashes the folder itself ("files"
    serialization, SHA-256, no symlinks), with UNSIGNED_PATHS as its ignore_paths. `signer` is a
    model_signing signer (`_signing.signing.Signer`)."""
    from model_signing import manifest
    from model_signing._hashing.hashing import Digest
    from model_signing._signing.signing import Payload

    items = [
        manifest.FileManifestItem(path=PurePosixPath(path), digest=Digest(HASH, bytes.fromhex(hexdigest)))
        for path, hexdigest in sorted(digests.items())
    ]
    serialization = manifest._FileSerialization(HASH, False, [Path(p) for p in UNSIGNED_PATHS])
    signature = signer.sign(Payload(manifest.Manifest(model_name, items, serialization)))
    with tempfile.TemporaryDirectory(prefix="deploygate-sig-") as tmp:
        out = Path(tmp) / "model.sig"
        signature.write(out)
        return out.read_bytes()


def sign_folder(folder: Path, signer: KeySigner | SigstoreSigner) -> bytes:
    """Hash every file of `folder` a signature covers, then sign those digests."""
    return signer.sign_digests(folder_digests(folder), model_name=folder.name)


class KeySigner:
    """Signs with an elliptic-curve private key (PEM), as model-signing's `sign key` does."""

    method = "key"

    def __init__(self, pem: bytes, *, where: str = "signing-key") -> None:
        self._pem = pem
        self._where = where

    def preflight(self) -> None:
        self._load()

    def _load(self) -> Any:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            key = serialization.load_pem_private_key(self._pem, password=None)
        except (ValueError, TypeError) as exc:
            # never the key's text: the message names the input only
            raise ConfigError(
                f"{self._where}: not a usable private key ({first_line(exc)}); {KEY_FIX}"
            ) from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in CURVES:
            kind = type(key).__name__.removeprefix("_")
            raise ConfigError(f"{self._where}: a {kind} is not supported by model-signing; {KEY_FIX}")
        return key

    def sign_digests(self, digests: Mapping[str, str], *, model_name: str) -> bytes:
        from model_signing._signing import sign_ec_key

        self._load()
        with tempfile.TemporaryDirectory(prefix="deploygate-key-") as tmp:
            path = Path(tmp) / "key.pem"  # model-signing reads keys from a file; 0600, deleted at once
            path.touch(mode=0o600)
            path.write_bytes(self._pem)
            signer = sign_ec_key.Signer(path)
        return sign_digests(digests, signer, model_name=model_name)


class SigstoreSigner:
    """Keyless Sigstore signing with the workflow's OIDC identity (GitHub Actions, `id-token: write`)."""

    method = "sigstore"

    def __init__(self, *, oidc_available: bool, identity_token: str | None = None) -> None:
        self._oidc_available = oidc_available
        self._identity_token = identity_token

    def preflight(self) -> None:
        if not self._oidc_available and not self._identity_token:
            raise ConfigError(
                "signing: sigstore needs the workflow's OIDC token and ACTIONS_ID_TOKEN_REQUEST_URL is not set; "
                "give the job `permissions: id-token: write` (or set SIGSTORE_ID_TOKEN), or use signing: key"
            )

    def sign_digests(self, digests: Mapping[str, str], *, model_name: str) -> bytes:
        self.preflight()
        try:
            from model_signing._signing import sign_sigstore

            signer = sign_sigstore.Signer(use_ambient_credentials=True, identity_token=self._identity_token)
            return sign_digests(digests, signer, model_name=model_name)
        except Exception as exc:  # network, TUF, Fulcio, Rekor, a refused token: one line, exit 1
            raise SigningError(
                f"Sigstore signing failed: {first_line(exc, 300)}",
                hint="Fix: check that the job has `permissions: id-token: write` and can reach Sigstore "
                "(fulcio.sigstore.dev, rekor.sigstore.dev), or use signing: key.",
            ) from None


class KeyVerifier:
    """Verifies signatures made with the private key of `public_key` (PEM)."""

    def __init__(self, public_key: bytes, *, where: str = "public-key") -> None:
        from cryptography.hazmat.primitives import serialization

        try:
            serialization.load_pem_public_key(public_key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{where}: not a PEM public key ({first_line(exc)}); give the public key of the signing key "
                "(`openssl ec -in signing-key.pem -pubout -out signing-key.pub`)"
            ) from None
        self._pem = public_key

    def describe(self) -> str:
        return "the given public key"

    def signed_digests(self, signature: bytes) -> dict[str, str]:
        from model_signing._signing import sign_ec_key, sign_sigstore_pb

        with tempfile.TemporaryDirectory(prefix="deploygate-verify-") as tmp:
            key, sig = Path(tmp) / "key.pub", Path(tmp) / "model.sig"
            key.write_bytes(self._pem)
            sig.write_bytes(signature)
            return _checked(lambda: sign_ec_key.Verifier(key).verify(sign_sigstore_pb.Signature.read(sig)))


class SigstoreVerifier:
    """Verifies keyless Sigstore signatures of one identity (e.g. a workflow file) from one OIDC issuer."""

    def __init__(self, identity: str, issuer: str) -> None:
        self.identity, self.issuer = identity, issuer

    def describe(self) -> str:
        return f"Sigstore identity {self.identity} (issuer {self.issuer})"

    def signed_digests(self, signature: bytes) -> dict[str, str]:
        from model_signing._signing import sign_sigstore

        with tempfile.TemporaryDirectory(prefix="deploygate-verify-") as tmp:
            sig = Path(tmp) / "model.sig"
            sig.write_bytes(signature)

            def check() -> Any:
                verifier = sign_sigstore.Verifier(identity=self.identity, oidc_issuer=self.issuer)
                return verifier.verify(sign_sigstore.Signature.read(sig))

            return _checked(check)


def _checked(verify: Any) -> dict[str, str]:
    """Run model-signing's verification; its manifest as digests, or SignatureInvalid in one line."""
    try:
        manifest = verify()
    except Exception as exc:  # InvalidSignature, ValueError, a bundle that does not parse, Sigstore
        raise SignatureInvalid(
            f"model.sig does not verify: {first_line(exc, 300, default='the signature is invalid')}"
        ) from None
    digests = {}
    for resource in manifest.resource_descriptors():
        if resource.digest.algorithm != HASH:
            raise SignatureInvalid(
                f"model.sig covers {resource.identifier} with {resource.digest.algorithm}; deploygate "
                "verifies SHA-256 file signatures (check it with the model_signing CLI instead)"
            )
        digests[str(resource.identifier)] = resource.digest.digest_hex
    return digests
