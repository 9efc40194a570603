"""What a signed Hub folder is, and how a folder is checked against its signature. Pure.

A deployed folder carries `model.sig`: a Sigstore bundle (DSSE envelope over an in-toto statement,
the OpenSSF model-signing format) whose predicate lists every other file with its SHA-256. This
module knows the names, which files are never signed (the signature itself, what git and the Hub
client add), and compares what a signature covers with what a folder holds, naming each file that
was changed, added or removed. The cryptography is adapters/model_signer.py's.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from deploygate.core.provenance import file_sha256

SIGNATURE_FILE = "model.sig"
VERDICT_FILE = "deploygate-verdict.json"

# Never signed, never checked: the signature itself; what git and the Hub add (`.gitattributes` is
# created by the Hub in every repo); the metadata `snapshot_download(local_dir=...)` writes. They
# are also written into the signature's `ignore_paths`, so that the model_signing CLI verifies a
# downloaded folder the same way.
UNSIGNED_PATHS: tuple[str, ...] = (
    SIGNATURE_FILE,
    ".git",
    ".gitattributes",
    ".github",
    ".gitignore",
    ".cache",
)

SigningMethod = Literal["off", "key", "sigstore"]


def is_unsigned(relative: str) -> bool:
    """Whether a folder's file (a relative POSIX path) is outside what a signature covers."""
    parts = PurePosixPath(relative).parts
    return bool(parts) and parts[0] in UNSIGNED_PATHS


HASH_THREADS = 4  # files hashed at once: hashlib releases the GIL, so shards hash on every core


def folder_digests(folder: Path) -> dict[str, str]:
    """{relative POSIX path: SHA-256 hex} of every file a signature covers, sorted by path."""
    paths = {
        path.relative_to(folder).as_posix(): path
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not is_unsigned(path.relative_to(folder).as_posix())
    }
    with ThreadPoolExecutor(max_workers=HASH_THREADS) as pool:
        return dict(zip(paths, pool.map(file_sha256, paths.values()), strict=True))


@dataclass(frozen=True)
class FileProblem:
    """One way a folder differs from what its signature covers."""

    path: str
    kind: Literal["changed", "added", "missing"]

    def describe(self) -> str:
        return {
            "changed": f"{self.path}: changed since it was signed (its SHA-256 differs)",
            "added": f"{self.path}: not covered by the signature (added after signing)",
            "missing": f"{self.path}: signed but missing from the folder (deleted after signing)",
        }[self.kind]


def compare(signed: Mapping[str, str], found: Mapping[str, str]) -> list[FileProblem]:
    """Every file that differs between the signed digests and the folder's, sorted by path."""
    problems = [FileProblem(p, "missing") for p in signed if p not in found]
    problems += [FileProblem(p, "added") for p in found if p not in signed]
    problems += [FileProblem(p, "changed") for p in signed if p in found and signed[p] != found[p]]
    return sorted(problems, key=lambda p: (p.path, p.kind))


@dataclass(frozen=True)
class VerifyResult:
    """What `deploygate verify` found: verified or not, why not, and the verdict the folder carries."""

    target: str  # what was checked: `org/model@rev` or a folder
    verified: bool
    problems: tuple[str, ...] = ()
    files: int = 0  # files the signature covers
    verdict: Mapping[str, Any] | None = None

    def headline(self) -> str:
        if self.verified:
            return f"verified: {self.target} ({self.files} files signed, none changed, added or removed)"
        return f"NOT verified: {self.target}: {self.problems[0] if self.problems else 'unknown reason'}"
