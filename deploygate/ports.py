"""The ports: what the services need of the outside world, as Protocols over core values.

service/ depends on these only; adapters/ implement them (MlflowRegistry, HubPublisher, LoraMerger,
ResultFiles), tests/fakes.py implements them in memory, bootstrap.py picks. A method is here when a
service calls it; what only a shell calls (doctor's checks) stays on the adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from deploygate.core.decision import Baseline
from deploygate.core.metrics import Weights
from deploygate.core.model import (
    Candidate,
    Champion,
    GateResult,
    HubPush,
    ModelSource,
    ResolvedSource,
    ShipRequest,
    StagedFile,
)
from deploygate.core.promotion import Holder
from deploygate.core.provenance import VersionFacts, VersionIdentity
from deploygate.core.render.card import CardInputs
from deploygate.core.settings import GateConfig
from deploygate.core.shard_plan import ByteRange, ShardSink

Clock = Callable[[], datetime]
Sleep = Callable[[float], None]


class Registry(Protocol):
    """The model registry and the tracking server (MLflow): runs, versions, the champion, history."""

    # reads
    def champion(self, name: str, alias: str, *, by_stage: bool = False) -> Champion | None: ...
    def version(self, name: str, version: str) -> Champion: ...
    def champion_baseline(
        self,
        name: str,
        alias: str,
        *,
        by_stage: bool = False,
        weights: Weights | None = None,
        scale: float = 1.0,
    ) -> Baseline | None: ...
    def best_ever_baseline(self, experiment_name: str) -> Baseline | None: ...
    def history(self, name: str) -> list[dict[str, Any]]: ...
    def holder(self, name: str, alias: str, *, by_stage: bool = False) -> Holder | None: ...
    def resolve_source(self, source: ModelSource) -> ResolvedSource: ...
    def download(self, source: ModelSource, dst: Path) -> Path: ...
    def find_version(self, name: str, candidate_key: str) -> str | None: ...
    def version_facts(self, name: str, version: str) -> VersionFacts: ...
    def read_artifact(self, run_id: str, path: str) -> str | None: ...
    def run_url(self, experiment_id: str, run_id: str) -> str | None: ...
    def version_url(self, name: str, version: str) -> str | None: ...
    def artifact_uri(self, run_id: str) -> str: ...
    def check_history_entry(self, entry: Mapping[str, Any]) -> None:
        """ConfigError when the entry could not be stored (MLflow's limits): before anything moves."""

    # writes: the gate run
    def experiment_id(self, name: str) -> str: ...
    def start_run(self, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str: ...
    def log_run(
        self, run_id: str, *, params: Mapping[str, str], metrics: Mapping[str, float], tags: Mapping[str, str]
    ) -> None: ...
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None: ...
    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str | None = None) -> None: ...
    def end_run(self, run_id: str, status: str) -> None: ...

    # writes: the registry
    def register(
        self,
        name: str,
        *,
        source_uri: str,
        run_id: str | None,
        tags: Mapping[str, str],
        description: str,
        model_id: str | None = None,
    ) -> str: ...
    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None: ...
    def set_champion(self, name: str, version: str, *, alias: str, promotion: str) -> None: ...
    def append_history(self, name: str, entry: Mapping[str, Any]) -> None: ...


class Hub(Protocol):
    """The Hugging Face Hub: one commit per push, a tag per version, main restored from a tag."""

    @property
    def token(self) -> str | None: ...
    @property
    def endpoint(self) -> str: ...
    def check_repo_access(self, repo_id: str) -> str: ...
    def head(self, repo_id: str) -> str | None: ...
    def tag_for(
        self, repo_id: str, tag: str, expected: VersionIdentity, *, recorded_commit: str | None
    ) -> HubPush | None: ...
    def adopt_push(
        self, repo_id: str, tag: str, title_prefix: str, expected: VersionIdentity
    ) -> HubPush | None: ...
    def snapshot(self, repo_id: str, local_dir: Path, *, revision: str | None = None) -> Path: ...
    def base_skeleton(self, repo_id: str, local_dir: Path) -> str | None:
        """The base's files but its weights' data (safetensors laid out sparse); the commit, or None
        when its weights are not safetensors."""

    def safetensors_sizes(self, repo_id: str) -> tuple[dict[str, int], int] | None:
        """(size of each safetensors file, largest tensor) from the file list and headers alone."""

    def fetch_ranges(
        self,
        repo_id: str,
        revision: str,
        local_dir: Path,
        ranges: Sequence[ByteRange],
        arrived: Callable[[ByteRange, int], None] | None = None,
    ) -> int:
        """Download the ranges into the sparse files at their offsets; `arrived(range, end)` after each
        piece is written: the range's bytes up to `end` are on disk (an exception it raises stops)."""

    def drop_ranges(self, local_dir: Path, ranges: Sequence[ByteRange]) -> None: ...
    def punch(self, local_dir: Path, byte_range: ByteRange) -> bool:
        """Free one fetched range's disk now; False where the file system cannot (`drop_ranges` will)."""

    def stage(self, repo_id: str, path_in_repo: str, local: Path, *, private: bool) -> StagedFile:
        """Upload one file of the next push ahead of its commit (skipped when the Hub has it)."""

    def push(
        self,
        repo_id: str,
        folder: Path,
        *,
        commit_message: str,
        private: bool,
        tag: str | None = None,
        staged: Sequence[str] = (),
    ) -> HubPush: ...
    def restore_tag(self, repo_id: str, tag: str, *, commit_message: str) -> HubPush: ...
    def sync_main(self, repo_id: str, tag: str, *, commit_message: str) -> HubPush | None: ...


class Signer(Protocol):
    """Signs a Hub folder's files (OpenSSF model-signing: a Sigstore bundle over their SHA-256s)."""

    @property
    def method(self) -> str:
        """`key` or `sigstore`."""

    def preflight(self) -> None:
        """ConfigError when signing cannot work (unreadable key, no OIDC token): before the first write."""

    def sign_digests(self, digests: Mapping[str, str], *, model_name: str) -> bytes:
        """The signature (model.sig's bytes) over {relative POSIX path: SHA-256 hex} of every file."""


class SignatureVerifier(Protocol):
    """Checks a signature's cryptography and identity (a public key, or a Sigstore identity)."""

    def describe(self) -> str:
        """Who the signature must come from, for messages."""

    def signed_digests(self, signature: bytes) -> dict[str, str]:
        """{relative path: SHA-256 hex} the signature covers; SignatureInvalid when it does not verify."""


class AdapterSummary(Protocol):
    """What the ship service reads of an adapter_config.json."""

    @property
    def base_model_name_or_path(self) -> str | None: ...
    @property
    def r(self) -> int: ...
    @property
    def lora_alpha(self) -> float: ...
    @property
    def target_modules(self) -> str | Sequence[str] | None: ...
    @property
    def use_rslora(self) -> bool: ...


class MergeSummary(Protocol):
    """What a merge (or the adapter-only copy) wrote."""

    @property
    def method(self) -> str: ...
    @property
    def tensors_total(self) -> int: ...
    @property
    def tensors_merged(self) -> int: ...
    @property
    def shards(self) -> tuple[str, ...]: ...
    @property
    def bytes_written(self) -> int: ...
    @property
    def warnings(self) -> tuple[str, ...]: ...


class Merger(Protocol):
    """The LoRA merge: adapter + base model folders in, the merged model folder out."""

    def missing_modules(self) -> list[str]:
        """What the merge needs and is not installed (checked before the first write)."""

    def inspect(self, adapter_dir: Path) -> AdapterSummary: ...
    def weights_sizes(self, base_dir: Path) -> tuple[dict[str, int], int] | None:
        """(size of each safetensors file, largest tensor) of a local base, from its headers."""

    def merge(
        self,
        base_dir: Path,
        adapter_dir: Path,
        out_dir: Path,
        progress: Callable[[int, int, str], None],
        *,
        max_shard_bytes: int = ...,
        sink: ShardSink | None = None,
    ) -> MergeSummary: ...
    def copy_adapter_only(self, adapter_dir: Path, out_dir: Path, base_dir: Path) -> MergeSummary: ...


class Machine(Protocol):
    """This machine's resources: what a deploy's preflight compares its needs with."""

    def free_disk(self, path: Path) -> int: ...
    def available_memory(self) -> int | None: ...


class CardRenderer(Protocol):
    """The model card: README.md text from the card's values and a template."""

    def render(self, inputs: CardInputs, template_path: Path | None) -> str: ...
    def check(self, template_path: Path) -> None:
        """ConfigError when a user's template cannot be read or rendered (before any write)."""


class Shipper(Protocol):
    """Builds the Hub folder (merge, tokenizer, card) and pushes it; returns the commit."""

    def preflight(self, candidate: Candidate, config: GateConfig) -> None:
        """Check the adapter and base model before the first write (InputError when unusable)."""

    def ship(self, request: ShipRequest) -> HubPush | None: ...
    def sync(self, config: GateConfig, version: str, why: str) -> HubPush | None:
        """Make the Hub's main hold `version`'s files again."""

    def close(self) -> None:
        """Drop anything preflight fetched."""


class HubSync(Protocol):
    """The one thing re-syncing the Hub's main needs: what `Shipper.sync` does."""

    def sync(self, config: GateConfig, version: str, why: str) -> HubPush | None: ...


class ResultWriter(Protocol):
    """The three result files (deployment_info.json, model_comparison.json, deployment_logs.txt)."""

    def write(self, result: GateResult, log_text: str) -> dict[str, Path]: ...
