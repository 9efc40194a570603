"""`deploygate verify`: is this folder (or Hub revision) exactly what the gate signed, and why was it deployed?

Reads only. The folder's `model.sig` must verify against the given key or Sigstore identity
(the verifier port), every file it covers must be there with the SHA-256 it signed, and no other
file may be present (UNSIGNED_PATHS aside). The verdict the folder carries is returned with the
outcome, a failed one included: it says which version the files claim to be.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from deploygate.core.errors import SignatureInvalid
from deploygate.core.render.verdict import parse_verdict
from deploygate.core.signing import SIGNATURE_FILE, VERDICT_FILE, VerifyResult, compare, folder_digests
from deploygate.ports import Hub, SignatureVerifier

log = logging.getLogger("deploygate.verify")


def verify_folder(folder: Path, verifier: SignatureVerifier, *, target: str | None = None) -> VerifyResult:
    """Check `folder` against its model.sig."""
    shown = target or str(folder)
    verdict_path = folder / VERDICT_FILE
    verdict = parse_verdict(verdict_path.read_bytes()) if verdict_path.is_file() else None
    signature = folder / SIGNATURE_FILE
    if not signature.is_file():
        return VerifyResult(
            shown,
            verified=False,
            problems=(
                f"{SIGNATURE_FILE}: missing, so the files are unsigned (deploy with signing: key or sigstore)",
            ),
            verdict=verdict,
        )
    try:
        signed = verifier.signed_digests(signature.read_bytes())
    except SignatureInvalid as exc:
        return VerifyResult(
            shown,
            verified=False,
            problems=(f"{exc.message} (expected {verifier.describe()})",),
            verdict=verdict,
        )
    found = folder_digests(folder)
    problems = tuple(p.describe() for p in compare(signed, found))  # the shells show them
    return VerifyResult(
        shown,
        verified=not problems,
        problems=problems,
        files=len(signed),
        verdict=verdict if VERDICT_FILE in signed else None,
    )


def verify_revision(
    hub: Hub, repo_id: str, revision: str | None, verifier: SignatureVerifier
) -> VerifyResult:
    """Download `repo_id` at `revision` (default main) and check it."""
    target = f"{repo_id}@{revision or 'main'}"
    with tempfile.TemporaryDirectory(prefix="deploygate-verify-") as tmp:
        log.info("downloading %s", target)
        folder = hub.snapshot(repo_id, Path(tmp) / "snapshot", revision=revision)
        return verify_folder(folder, verifier, target=target)
