"""What one gate run knew and did: the values the shells turn into outputs, files and reports.

Pure data. `RunContext` is where the run happened (CI facts, read by the shells from the
environment); `GateResult` is what came of it. Nothing here reads the environment or the clock.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from deploygate.core.decision import Baseline, Decision
from deploygate.core.errors import ConfigError
from deploygate.core.metrics import EvaluationMetrics, WeightedScore
from deploygate.core.settings import GateConfig
from deploygate.core.signature import MetricSignature

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
            raise ConfigError(f"reason: {len(self.reason):,} characters ({self.reason[:40]!r}...); at most "
                              f"{REASON_MAX:,} are recorded with the run and the promotion history; shorten it")

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
class HubPush:
    repo_id: str
    sha: str
    url: str
    tag: str | None = None


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
        }
