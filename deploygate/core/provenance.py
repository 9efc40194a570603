"""What a Hub tag was made for: one registered model version, as MLflow recorded it.

A tag `v<N>` names a version number, and version numbers restart at 1 when a registered model is
deleted and recreated, or when another registered model pushes to the same repo. So each pushed
commit carries `deploygate.json`: the registry identity it was built for (tracking server,
registered model, version, the version's creation time, candidate key, the gate run that
registered it) and the SHA-256 of every other file. A tag is used only when its record names this
version; `mismatch` says how they differ. `VersionFacts` is everything MLflow recorded for a
version that the Hub folder is built from (the record and the model card), so that a re-run
builds the same bytes.

Pure: values in, values and text out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from deploygate.core.render.card import CardBaseline

RECORD_FILE = "deploygate.json"
RECORD_FORMAT = 1


@dataclass(frozen=True)
class VersionIdentity:
    """One registered model version. Two identities are the same version when their version number,
    creation time, candidate key and registering gate run agree; the model's name and the server's
    address are shown, not compared (a model renamed in MLflow, or a server behind a new address,
    keeps its versions)."""

    registry_name: str
    version: str
    created_ms: int | None
    candidate_key: str | None
    gate_run_id: str | None
    tracking_server: str

    @property
    def created(self) -> str | None:
        """The creation time as ISO 8601 UTC (what the model card says)."""
        if self.created_ms is None:
            return None
        return datetime.fromtimestamp(self.created_ms / 1000, UTC).isoformat().replace("+00:00", "Z")

    def describe(self) -> str:
        parts = [f"registered {self.created}" if self.created else "registration time unknown"]
        if self.candidate_key:
            parts.append(f"candidate {self.candidate_key[:12]}")
        if self.gate_run_id:
            parts.append(f"gate run {self.gate_run_id[:12]}")
        return f"{self.registry_name!r} v{self.version} ({', '.join(parts)}) on {self.tracking_server}"

    def to_json(self) -> dict[str, Any]:
        return {
            "tracking_server": self.tracking_server,
            "name": self.registry_name,
            "version": self.version,
            "created": self.created,
            "created_ms": self.created_ms,
            "candidate_key": self.candidate_key,
            "gate_run_id": self.gate_run_id,
        }

    @classmethod
    def from_json(cls, data: object) -> VersionIdentity | None:
        """None for anything that is not a record this module wrote."""
        if not isinstance(data, Mapping) or data.get("format") != RECORD_FORMAT:
            return None
        reg = data.get("registry")
        if not isinstance(reg, Mapping) or not isinstance(reg.get("version"), str):
            return None
        created = reg.get("created_ms")

        def text(key: str) -> str | None:
            value = reg.get(key)
            return value if isinstance(value, str) else None

        return cls(
            registry_name=text("name") or "?",
            version=str(reg["version"]),
            created_ms=created if isinstance(created, int) and not isinstance(created, bool) else None,
            candidate_key=text("candidate_key"),
            gate_run_id=text("gate_run_id"),
            tracking_server=text("tracking_server") or "?",
        )


def mismatch(expected: VersionIdentity, found: VersionIdentity) -> list[str]:
    """How the version a tag was made for differs from `expected` ([] when it is the same version).
    A field either side does not know is not compared; the version number always is."""
    differences = []
    if found.version != expected.version:
        differences.append(f"version {found.version} vs {expected.version}")
    for label, mine, theirs in (
        ("registration time", expected.created_ms, found.created_ms),
        ("candidate key", expected.candidate_key, found.candidate_key),
        ("gate run", expected.gate_run_id, found.gate_run_id),
    ):
        if mine is not None and theirs is not None and mine != theirs:
            differences.append(label)
    if expected.created_ms is None and expected.candidate_key is None and expected.gate_run_id is None:
        differences.append("nothing recorded on this version to compare")
    return differences


def record_text(identity: VersionIdentity, files: Mapping[str, str]) -> str:
    """The text of deploygate.json for a folder whose other files have these SHA-256 digests."""
    data = {
        "format": RECORD_FORMAT,
        "written_by": "deploygate",
        "registry": identity.to_json(),
        "files": dict(sorted(files.items())),
    }
    return json.dumps(data, indent=2, sort_keys=False) + "\n"


def parse_record(text: str | bytes | None) -> VersionIdentity | None:
    if text is None:
        return None
    try:
        return VersionIdentity.from_json(json.loads(text))
    except (ValueError, RecursionError):
        return None


@dataclass(frozen=True)
class VersionFacts:
    """What MLflow recorded for one version: its identity and what its model card states. Fields a
    version registered by an earlier release does not carry are None (the caller falls back)."""

    identity: VersionIdentity
    hub_commit: str | None  # deploygate.hf_commit: the Hub commit recorded after its push
    score: float | None
    metrics: Mapping[str, float] | None
    weights: Mapping[str, float] | None
    verdict: str | None
    reason: str | None
    baseline: CardBaseline | None  # the champion it was compared with when registered
    baseline_recorded: bool  # False: the version predates the baseline tag (unknown, not "none")
    git_sha: str | None
    gate_run_url: str | None
    version_url: str | None


def baseline_json(
    version: str | None, score: float | None, metrics: Mapping[str, float], *, limit: int
) -> str:
    """The champion a version was compared with, as a version tag value of at most `limit` characters
    (the metrics are dropped rather than cut when they do not fit); "none" for a first model."""
    if score is None:
        return "none"
    text = json.dumps({"version": version, "score": score, "metrics": dict(metrics)}, sort_keys=True)
    if len(text) > limit:
        text = json.dumps({"version": version, "score": score, "metrics": {}}, sort_keys=True)
    return text


def parse_baseline(raw: str | None) -> tuple[bool, CardBaseline | None]:
    """(recorded, baseline) from the version tag `baseline_json` wrote."""
    if raw is None:
        return False, None
    if raw == "none":
        return True, None
    try:
        data = json.loads(raw)
        metrics = {str(k): float(v) for k, v in (data.get("metrics") or {}).items()}
        version = data.get("version")
        return True, CardBaseline(None if version is None else str(version), float(data["score"]), metrics)
    except (ValueError, TypeError, KeyError, AttributeError):
        return False, None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
