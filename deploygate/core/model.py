"""What one gate run knew and did: the values the shells turn into outputs, files and reports.

Pure data. `RunContext` is where the run happened (CI facts, read by the shells from the
environment); `GateResult` is what came of it. Nothing here reads the environment or the clock.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from deploygate.core.decision import Baseline, Decision
from deploygate.core.errors import ConfigError
from deploygate.core.metrics import EvaluationMetrics, WeightedScore
from deploygate.core.settings import GateConfig
from deploygate.core.signature import MetricSignature

if TYPE_CHECKING:
    from deploygate.core.evaluation import ExampleStats

# The longest --reason (or dispatch reason) kept: it goes into run tags and the promotion history
# entry, which MLflow stores in tags of at most 5,000 characters together with the rest of the record.
REASON_MAX = 1000

# superseded: the verdict was deploy, but a better (or forced) candidate was promoted concurrently
Status = Literal["deployed", "skipped", "verdict-only", "superseded", "failed"]


@dataclass(frozen=True)
class RunContext:
    """Facts about the run's surroundings (GitHub Actions, a local shell, DVC)."""

    event_name: str = "cli"  # push | pull_request | pull_request_target | workflow_dispatch | cli | ...
    git_sha: str | None = None
    git_ref: str | None = None
    repository: str | None = None  # owner/name on GitHub
    actor: str | None = None
    ci_run_url: str | None = None
    pr_number: int | None = None
    is_fork: bool = False
    reason: str | None = None  # why a forced deploy / rollback was asked for

    def __post_init__(self) -> None:
        if self.reason is not None and len(self.reason) > REASON_MAX:
            raise ConfigError(
                f"reason: {len(self.reason):,} characters ({self.reason[:40]!r}...); at most "
                f"{REASON_MAX:,} are recorded with the run and the promotion history; shorten it"
            )

    @property
    def is_pull_request(self) -> bool:
        return self.event_name.startswith("pull_request")


@dataclass(frozen=True)
class HistoryPoint:
    """One past deployment, for the trend chart: registry version and its recorded score."""

    version: str
    score: float
    current: bool = False  # the candidate of this run


@dataclass(frozen=True)
class FileDigest:
    """One file of a Hub commit: its SHA-256 (hex) and size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True)
class HubPush:
    repo_id: str
    sha: str
    url: str
    tag: str | None = None
    signature_sha256: str | None = None  # the model.sig pushed in this commit, when signed
    signing: str | None = None  # key | sigstore
    # relative path -> digest of every file the push committed (empty when nothing was pushed)
    manifest: Mapping[str, FileDigest] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class StagedFile:
    """A file of the next push uploaded ahead of its commit. `uploaded`: its bytes are on the Hub (an
    LFS object), so the local file may go; else the Hub takes it inline in the commit (keep it)."""

    path: str
    digest: FileDigest
    uploaded: bool


@dataclass(frozen=True)
class GateResult:
    status: Status
    config: GateConfig
    context: RunContext
    metrics: EvaluationMetrics
    candidate: WeightedScore
    baseline: Baseline | None
    decision: Decision
    started_at: str
    finished_at: str
    registered_version: str | None = None
    mlflow_run_id: str | None = None
    mlflow_run_url: str | None = None
    model_version_url: str | None = None
    hub: HubPush | None = None
    mlflow_experiment_id: str | None = None
    hub_export_dir: Path | None = None  # where the Hub folder was written (--hf-export-dir), pushed or not
    history: tuple[HistoryPoint, ...] = ()
    error: str | None = None
    warnings: tuple[str, ...] = ()
    files: Mapping[str, Path] = field(default_factory=dict)
    signature: MetricSignature | None = None
    comparability: str = "unknown"  # same | unknown | allowed (allowed: differs, allow-incomparable set)
    signature_differences: tuple[str, ...] = ()

    @property
    def deployed(self) -> bool:
        return self.status == "deployed"

    def outputs(self) -> dict[str, str]:
        """The action's outputs (every value a string; empty when unknown)."""

        def num(x: float | None) -> str:
            return "" if x is None else f"{x:.6f}"

        return {
            "decision": self.decision.verdict,
            "deployed": "true" if self.deployed else "false",
            "reason": self.error or self.decision.reason,
            "weighted-score": num(self.candidate.score),
            "baseline-score": num(self.baseline.score if self.baseline else None),
            "improvement": num(self.decision.improvement),
            "model-version": self.registered_version or "",
            "mlflow-run-url": self.mlflow_run_url or "",
            "hf-commit-url": self.hub.url if self.hub else "",
            "verified": "",
        }


@dataclass(frozen=True)
class ModelSource:
    """Where the candidate model is: an MLflow run's artifact, any model URI, or a local folder."""

    run_id: str | None = None
    artifact_path: str = "model"
    model_uri: str | None = None
    local_path: Path | None = None
    tracking_uri: str | None = None  # the location file's: the server the run was logged to

    def describe(self) -> str:
        if self.model_uri:
            return self.model_uri
        if self.run_id:
            return f"runs:/{self.run_id}/{self.artifact_path}"
        return str(self.local_path)

    def candidate_key(self, git_sha: str | None) -> str:
        """Same source + same commit = same candidate: a re-run must not add a second version."""
        raw = f"{self.describe()}|{git_sha or ''}"
        if self.local_path is not None:
            raw += "|" + _tree_digest(self.local_path)
        return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(str(path.stat().st_size).encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ResolvedSource:
    """What holds the candidate's files, as the registry records it: a LoggedModel (MLflow 3,
    `models:/m-<id>` with its model_id), a run's artifact folder (MLflow 2), a given URI, or a
    local folder (uri None: logged to the gate run first)."""

    uri: str | None
    run_id: str | None
    model_id: str | None = None
    where: str = ""  # one phrase for the log: what was found where
    fetch_uri: str | None = None  # where the files are read from (no models:/ URI: MLflow resolves those
    # against its global registry URI, not the client's)


@dataclass(frozen=True)
class Champion:
    version: str
    score: float | None
    metrics: Mapping[str, float]
    gate_run_id: str | None
    source: str
    hf_commit: str | None = None
    signature: str | None = None
    override: bool = False  # promoted by a forced deploy or a rollback
    run_id: str | None = None  # the version's source run (the training run)
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Candidate:
    """The candidate as the shell read it: validated metrics and where the model is."""

    metrics: EvaluationMetrics
    source: ModelSource | None
    signature: MetricSignature
    location: Mapping[str, Any] = field(default_factory=dict)  # the model location record, as read
    stats: ExampleStats | None = None  # per-example statistics, when computed from predictions


@dataclass(frozen=True)
class ShipRequest:
    """What the Hub stage needs to build and push one deployment."""

    config: GateConfig
    context: RunContext
    candidate: Candidate
    version: str
    score: float
    baseline: Baseline | None
    reason: str
    verdict: str
    mlflow_run_url: str | None
    model_version_url: str | None
    created_at: str
    mlflow_run_id: str | None = None
    result: GateResult | None = None  # the run as far as it got (decided, registered): the verdict's source


@dataclass(frozen=True)
class RollbackResult:
    from_version: str
    to_version: str
    score: float | None
    mlflow_run_id: str
    mlflow_run_url: str | None
    hub: HubPush | None
    log_text: str
