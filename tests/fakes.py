"""Hand-written in-memory adapters behind deploygate.ports: a registry, a Hub, a merger, a card
renderer, a result writer, and a signer with its verifier. No SDK, no server, no mock.patch: each keeps what it was told in plain
dictionaries and appends every write to one shared `journal`, so a test can assert the order of
writes across systems ("registered before pushed", "alias only after the push").

`fail_on` makes a named operation raise (an outside failure, exit 1) the n-th time it is called.
They mirror the real adapters' contracts as far as the services can see them; the real adapters
are tested against real servers in tests/integration.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from deploygate.core import records
from deploygate.core.decision import Baseline
from deploygate.core.errors import ConfigError, HubError, RegistryError, SignatureInvalid
from deploygate.core.metrics import Weights
from deploygate.core.model import (
    Champion,
    FileDigest,
    GateResult,
    HubPush,
    ModelSource,
    ResolvedSource,
    StagedFile,
)
from deploygate.core.promotion import Holder
from deploygate.core.provenance import (
    RECORD_FILE,
    VersionFacts,
    VersionIdentity,
    mismatch,
    parse_baseline,
    parse_record,
)
from deploygate.core.render.card import CardInputs
from deploygate.core.shard_plan import ByteRange, OutputShard, ShardSink


class Journal(list[tuple[str, ...]]):
    """Every write, in order, as (system, operation, detail...)."""

    def ops(self, system: str | None = None) -> list[str]:
        return [f"{e[0]}.{e[1]}" for e in self if system is None or e[0] == system]


class Faults:
    """Operations that raise on their n-th call: {"hub.push": 1} fails the first push."""

    def __init__(
        self, fail_on: Mapping[str, int] | None = None, error: Callable[[str], Exception] | None = None
    ) -> None:
        self.fail_on = dict(fail_on or {})
        self.calls: dict[str, int] = {}
        self.error = error

    def check(self, op: str) -> None:
        self.calls[op] = self.calls.get(op, 0) + 1
        if self.fail_on.get(op) == self.calls[op]:
            make = self.error or (
                lambda what: (HubError if what.startswith("hub.") else RegistryError)(
                    f"{what} failed (injected by the test)"
                )
            )
            raise make(op)


@dataclass
class _Version:
    version: str
    source_uri: str
    run_id: str | None
    tags: dict[str, str]
    created_ms: int


@dataclass
class _Run:
    experiment_id: str
    tags: dict[str, str]
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, list[str]] = field(default_factory=dict)
    status: str = "RUNNING"


class FakeRegistry:
    """The Registry port in memory: runs, versions, the champion alias, the promotion history."""

    server = "fake://registry"

    def __init__(self, journal: Journal | None = None, faults: Faults | None = None) -> None:
        self.journal = journal if journal is not None else Journal()
        self.faults = faults or Faults()
        self.runs: dict[str, _Run] = {}
        self.versions: dict[str, dict[str, _Version]] = {}
        self.aliases: dict[tuple[str, str], str] = {}
        self.stages: dict[str, str] = {}
        self.histories: dict[str, list[dict[str, Any]]] = {}
        self.experiments: dict[str, str] = {}

    # --- helpers for tests ---------------------------------------------------------------------
    def _write(self, op: str, *detail: str) -> None:
        self.faults.check(f"registry.{op}")
        self.journal.append(("registry", op, *detail))

    def seed_champion(
        self,
        name: str,
        score: float,
        metrics: Mapping[str, float],
        *,
        alias: str = "champion",
        signature: str | None = None,
    ) -> str:
        """A champion registered by an earlier run (nothing in the journal)."""
        version = str(len(self.versions.get(name, {})) + 1)
        tags = {
            records.TAG_SCORE: repr(score),
            records.TAG_METRICS: json.dumps(dict(metrics)),
            records.TAG_GATE_RUN: "0" * 32,
        }
        if signature:
            tags[records.TAG_SIGNATURE] = signature
        self.versions.setdefault(name, {})[version] = _Version(
            version, "fake:/seed", None, tags, 1_700_000_000_000
        )
        self.aliases[(name, alias)] = version
        self.histories.setdefault(name, []).append(
            {"version": version, "score": score, "at": "2026-01-01T00:00:00+00:00"}
        )
        return version

    def champion_version(self, name: str, alias: str = "champion") -> str | None:
        return self.aliases.get((name, alias))

    # --- reads -------------------------------------------------------------------------------------
    def _champion_of(self, name: str, v: _Version) -> Champion:
        tags = v.tags
        metrics = json.loads(tags[records.TAG_METRICS]) if records.TAG_METRICS in tags else {}
        return Champion(
            version=v.version,
            score=float(tags[records.TAG_SCORE]) if records.TAG_SCORE in tags else None,
            metrics=metrics,
            gate_run_id=tags.get(records.TAG_GATE_RUN),
            source=v.source_uri,
            hf_commit=tags.get(records.TAG_HUB_COMMIT),
            signature=tags.get(records.TAG_SIGNATURE),
            override=tags.get(records.TAG_OVERRIDE) in ("forced", "rollback"),
            run_id=v.run_id,
            tags=dict(tags),
        )

    def champion(self, name: str, alias: str, *, by_stage: bool = False) -> Champion | None:
        version = self.stages.get(name) if by_stage else self.aliases.get((name, alias))
        return None if version is None else self._champion_of(name, self.versions[name][version])

    def version(self, name: str, version: str) -> Champion:
        return self._champion_of(name, self.versions[name][version])

    def champion_baseline(
        self,
        name: str,
        alias: str,
        *,
        by_stage: bool = False,
        weights: Weights | None = None,
        scale: float = 1.0,
    ) -> Baseline | None:
        champ = self.champion(name, alias, by_stage=by_stage)
        if champ is None:
            return None
        assert champ.score is not None, "the fake only holds versions with a recorded score"
        return Baseline(
            score=champ.score,
            source="champion",
            version=champ.version,
            run_id=champ.gate_run_id,
            metrics=dict(champ.metrics),
            signature=champ.signature,
        )

    def best_ever_baseline(self, experiment_name: str) -> Baseline | None:
        return None

    def history(self, name: str) -> list[dict[str, Any]]:
        return [dict(e) for e in self.histories.get(name, [])]

    def holder(self, name: str, alias: str, *, by_stage: bool = False) -> Holder | None:
        champ = self.champion(name, alias, by_stage=by_stage)
        return None if champ is None else Holder(champ.version, champ.score, champ.override)

    def resolve_source(self, source: ModelSource) -> ResolvedSource:
        if source.local_path is not None:
            if not source.local_path.is_dir():
                from deploygate.core.errors import ModelSourceError

                raise ModelSourceError(f"model: {source.local_path} is not a folder")
            return ResolvedSource(uri=None, run_id=None, where=f"local folder {source.local_path}")
        return ResolvedSource(uri=source.describe(), run_id=source.run_id, where="fake")

    def download(self, source: ModelSource, dst: Path) -> Path:
        raise AssertionError("the fakes' candidates are local folders")

    def find_version(self, name: str, candidate_key: str) -> str | None:
        for v in self.versions.get(name, {}).values():
            if v.tags.get(records.TAG_CANDIDATE) == candidate_key:
                return v.version
        return None

    def version_facts(self, name: str, version: str) -> VersionFacts:
        v = self.versions[name][version]
        recorded, baseline = parse_baseline(v.tags.get(records.TAG_BASELINE))
        return VersionFacts(
            identity=VersionIdentity(
                name,
                version,
                v.created_ms,
                v.tags.get(records.TAG_CANDIDATE),
                v.tags.get(records.TAG_GATE_RUN),
                self.server,
            ),
            hub_commit=v.tags.get(records.TAG_HUB_COMMIT),
            score=float(v.tags[records.TAG_SCORE]) if records.TAG_SCORE in v.tags else None,
            metrics=json.loads(v.tags[records.TAG_METRICS]) if records.TAG_METRICS in v.tags else None,
            weights=None,
            verdict=v.tags.get(records.TAG_DECISION),
            reason=v.tags.get(records.TAG_REASON),
            baseline=baseline,
            baseline_recorded=recorded,
            git_sha=v.tags.get(records.TAG_GIT_SHA),
            gate_run_url=None,
            version_url=None,
        )

    def read_artifact(self, run_id: str, path: str) -> str | None:
        return None

    def run_url(self, experiment_id: str, run_id: str) -> str | None:
        return f"http://fake/#/experiments/{experiment_id}/runs/{run_id}"

    def version_url(self, name: str, version: str) -> str | None:
        return f"http://fake/#/models/{name}/versions/{version}"

    def artifact_uri(self, run_id: str) -> str:
        return f"fake-artifacts:/{run_id}"

    def check_history_entry(self, entry: Mapping[str, Any]) -> None:
        return None

    # --- writes --------------------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str:
        if name not in self.experiments:
            self._write("create_experiment", name)
            self.experiments[name] = str(len(self.experiments) + 1)
        return self.experiments[name]

    def start_run(self, experiment_id: str, run_name: str, tags: Mapping[str, str]) -> str:
        self._write("start_run", run_name)
        run_id = f"{len(self.runs) + 1:032x}"
        self.runs[run_id] = _Run(experiment_id, dict(tags))
        return run_id

    def log_run(
        self, run_id: str, *, params: Mapping[str, str], metrics: Mapping[str, float], tags: Mapping[str, str]
    ) -> None:
        self._write("log_run", run_id)
        run = self.runs[run_id]
        run.params.update(params)
        run.metrics.update(metrics)
        run.tags.update(tags)

    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        self._write("set_tags", run_id, *sorted(tags))
        self.runs[run_id].tags.update(tags)

    def log_artifacts(self, run_id: str, folder: Path, artifact_path: str | None = None) -> None:
        self._write("log_artifacts", run_id, artifact_path or "")
        files = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
        self.runs[run_id].artifacts[artifact_path or ""] = files

    def end_run(self, run_id: str, status: str) -> None:
        self._write("end_run", run_id, status)
        self.runs[run_id].status = status

    def register(
        self,
        name: str,
        *,
        source_uri: str,
        run_id: str | None,
        tags: Mapping[str, str],
        description: str,
        model_id: str | None = None,
    ) -> str:
        self._write("register", name)
        versions = self.versions.setdefault(name, {})
        version = str(len(versions) + 1)
        versions[version] = _Version(
            version, source_uri, run_id, dict(tags), 1_800_000_000_000 + len(versions)
        )
        return version

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        self._write("set_version_tags", version, *sorted(tags))
        self.versions[name][version].tags.update(tags)

    def set_champion(self, name: str, version: str, *, alias: str, promotion: str) -> None:
        self._write("set_champion", version)
        if promotion in ("alias", "both"):
            self.aliases[(name, alias)] = version
        if promotion in ("stage", "both"):
            self.stages[name] = version

    def append_history(self, name: str, entry: Mapping[str, Any]) -> None:
        self._write("append_history", str(entry.get("version")))
        self.histories.setdefault(name, []).append(dict(entry))


class FakeHub:
    """The Hub port in memory: repos of commits (path -> bytes), tags, main."""

    endpoint = "http://fake-hub"

    def __init__(
        self, journal: Journal | None = None, faults: Faults | None = None, token: str | None = "hf_fake"
    ) -> None:
        self.journal = journal if journal is not None else Journal()
        self.faults = faults or Faults()
        self.token = token
        self.commits: dict[str, list[tuple[str, dict[str, bytes]]]] = {}  # repo -> [(sha, files)]
        self.tags: dict[tuple[str, str], str] = {}
        self.main: dict[str, str] = {}
        self.staged: dict[tuple[str, str], bytes] = {}

    def _write(self, op: str, *detail: str) -> None:
        self.faults.check(f"hub.{op}")
        self.journal.append(("hub", op, *detail))

    def _commit(self, repo_id: str, files: dict[str, bytes]) -> HubPush:
        sha = f"{sum(len(c) for c in self.commits.values()) + 1:040x}"
        self.commits.setdefault(repo_id, []).append((sha, files))
        self.main[repo_id] = sha
        return HubPush(repo_id, sha, f"{self.endpoint}/{repo_id}/commit/{sha}")

    def files_at(self, repo_id: str, sha: str) -> dict[str, bytes]:
        return next(files for s, files in self.commits[repo_id] if s == sha)

    def check_repo_access(self, repo_id: str) -> str:
        return f"can write to {repo_id}"

    def head(self, repo_id: str) -> str | None:
        return self.main.get(repo_id)

    def tag_for(
        self, repo_id: str, tag: str, expected: VersionIdentity, *, recorded_commit: str | None
    ) -> HubPush | None:
        sha = self.tags.get((repo_id, tag))
        if sha is None:
            return None
        found = parse_record(self.files_at(repo_id, sha).get(RECORD_FILE))
        if found is None or mismatch(expected, found):
            raise HubError(f"Hub {repo_id} tag {tag} was made for another version")
        return HubPush(repo_id, sha, f"{self.endpoint}/{repo_id}/commit/{sha}", tag)

    def adopt_push(
        self, repo_id: str, tag: str, title_prefix: str, expected: VersionIdentity
    ) -> HubPush | None:
        return None

    def snapshot(self, repo_id: str, local_dir: Path, *, revision: str | None = None) -> Path:
        """A revision's files written to `local_dir` (verify reads them; base models are local folders)."""
        sha = self.main[repo_id] if revision is None else self.tags.get((repo_id, revision), revision)
        for path, content in self.files_at(repo_id, sha).items():
            (local_dir / path).parent.mkdir(parents=True, exist_ok=True)
            (local_dir / path).write_bytes(content)
        return local_dir

    def base_skeleton(self, repo_id: str, local_dir: Path) -> str | None:
        raise AssertionError("the fakes' base models are local folders")

    def safetensors_sizes(self, repo_id: str) -> tuple[dict[str, int], int] | None:
        return None

    def fetch_ranges(
        self, repo_id: str, revision: str, local_dir: Path, ranges: Sequence[ByteRange], arrived: Any = None
    ) -> int:
        raise AssertionError("the fakes' base models are local folders")

    def drop_ranges(self, local_dir: Path, ranges: Sequence[ByteRange]) -> None:
        raise AssertionError("the fakes' base models are local folders")

    def punch(self, local_dir: Path, byte_range: ByteRange) -> bool:
        raise AssertionError("the fakes' base models are local folders")

    def stage(self, repo_id: str, path_in_repo: str, local: Path, *, private: bool) -> StagedFile:
        """Uploaded ahead of the commit: kept here until `push` names it."""
        self._write("stage", repo_id, path_in_repo)
        data = local.read_bytes()
        self.staged[(repo_id, path_in_repo)] = data
        return StagedFile(
            path_in_repo, FileDigest(hashlib.sha256(data).hexdigest(), len(data)), uploaded=True
        )

    def push(
        self,
        repo_id: str,
        folder: Path,
        *,
        commit_message: str,
        private: bool,
        tag: str | None = None,
        staged: Sequence[str] = (),
    ) -> HubPush:
        self._write("push", repo_id, tag or "")
        files = {
            p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
        }
        files |= {path: self.staged.pop((repo_id, path)) for path in staged}
        commit = self._commit(repo_id, files)
        if tag is not None:
            self._write("create_tag", repo_id, tag)
            self.tags[(repo_id, tag)] = commit.sha
        return HubPush(repo_id, commit.sha, commit.url, tag)

    def restore_tag(self, repo_id: str, tag: str, *, commit_message: str) -> HubPush:
        self._write("restore_tag", repo_id, tag)
        return self._commit(repo_id, dict(self.files_at(repo_id, self.tags[(repo_id, tag)])))

    def sync_main(self, repo_id: str, tag: str, *, commit_message: str) -> HubPush | None:
        sha = self.tags.get((repo_id, tag))
        if sha is None or self.files_at(repo_id, self.main[repo_id]) == self.files_at(repo_id, sha):
            return None
        self._write("sync_main", repo_id, tag)
        return self._commit(repo_id, dict(self.files_at(repo_id, sha)))


@dataclass(frozen=True)
class FakeAdapterInfo:
    base_model_name_or_path: str | None
    r: int = 8
    lora_alpha: float = 16
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    use_rslora: bool = False


@dataclass(frozen=True)
class FakeMergeReport:
    method: str
    tensors_total: int = 2
    tensors_merged: int = 1
    shards: tuple[str, ...] = ("model.safetensors",)
    bytes_written: int = 4
    warnings: tuple[str, ...] = ()


class FakeMerger:
    """The Merger port: reads adapter_config.json as JSON, "merges" by writing one small file."""

    def __init__(self, journal: Journal | None = None, missing: list[str] | None = None) -> None:
        self.journal = journal if journal is not None else Journal()
        self.missing = missing or []

    def missing_modules(self) -> list[str]:
        return list(self.missing)

    def inspect(self, adapter_dir: Path) -> FakeAdapterInfo:
        from deploygate.core.errors import AdapterError

        try:
            config = json.loads((adapter_dir / "adapter_config.json").read_text())
        except ValueError as exc:
            raise AdapterError(f"{adapter_dir / 'adapter_config.json'}: not JSON ({exc})") from None
        return FakeAdapterInfo(config.get("base_model_name_or_path"))

    def weights_sizes(self, base_dir: Path) -> tuple[dict[str, int], int] | None:
        return None

    def merge(
        self,
        base_dir: Path,
        adapter_dir: Path,
        out_dir: Path,
        progress: Callable[[int, int, str], None],
        *,
        max_shard_bytes: int = 2_000_000_000,
        sink: ShardSink | None = None,
    ) -> FakeMergeReport:
        self.journal.append(("merger", "merge", str(adapter_dir)))
        out_dir.mkdir(parents=True, exist_ok=True)
        weights = (adapter_dir / "adapter_model.safetensors").read_bytes()
        shard = OutputShard("model.safetensors", (), len(weights), ())
        if sink is not None:
            sink.fetch(shard, 1, 1)
        (out_dir / "model.safetensors").write_bytes(weights)
        (out_dir / "config.json").write_text((base_dir / "config.json").read_text())
        if sink is not None:
            sink.release(())
            sink.written(shard, str(out_dir / "model.safetensors"), 1, 1)
        return FakeMergeReport("streaming")

    def copy_adapter_only(self, adapter_dir: Path, out_dir: Path, base_dir: Path) -> FakeMergeReport:
        self.journal.append(("merger", "copy_adapter_only", str(adapter_dir)))
        out_dir.mkdir(parents=True, exist_ok=True)
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            (out_dir / name).write_bytes((adapter_dir / name).read_bytes())
        return FakeMergeReport("adapter-only")


class FakeCards:
    """The CardRenderer port: one line per card, from the values the card would state."""

    def render(self, inputs: CardInputs, template_path: Path | None) -> str:
        return f"# {inputs.repo_id} v{inputs.registry_version}: {inputs.weighted_score:.4f} ({inputs.decision.verdict})\n"

    def check(self, template_path: Path) -> None:
        return None


class MemoryResultFiles:
    """The ResultWriter port: keeps each write's result instead of writing files."""

    def __init__(self, journal: Journal | None = None) -> None:
        self.journal = journal if journal is not None else Journal()
        self.written: list[GateResult] = []

    def write(self, result: GateResult, log_text: str) -> dict[str, Path]:
        self.journal.append(("files", "write", result.status))
        self.written.append(result)
        return {}


class TickingClock:
    """A clock that advances one second per reading (deterministic, strictly increasing)."""

    def __init__(self) -> None:
        self.now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


class FakeSigner:
    """The Signer port: a "signature" that is the JSON of the digests it was given and the signer's
    name (no cryptography); `refuse` makes preflight raise as an unusable key / missing token would."""

    method = "key"

    def __init__(
        self, journal: Journal | None = None, *, name: str = "fake-key", refuse: str | None = None
    ) -> None:
        self.journal = journal if journal is not None else Journal()
        self.name = name
        self.refuse = refuse
        self.signed: list[dict[str, str]] = []

    def preflight(self) -> None:
        if self.refuse:
            raise ConfigError(self.refuse)

    def sign_digests(self, digests: Mapping[str, str], *, model_name: str) -> bytes:
        self.journal.append(("signer", "sign", model_name))
        self.signed.append(dict(digests))
        return json.dumps({"signer": self.name, "model": model_name, "files": dict(digests)}).encode()


class FakeVerifier:
    """The SignatureVerifier port for FakeSigner's signatures: accepts those of signer `name` only."""

    def __init__(self, name: str = "fake-key") -> None:
        self.name = name

    def describe(self) -> str:
        return f"the key {self.name}"

    def signed_digests(self, signature: bytes) -> dict[str, str]:
        try:
            data = json.loads(signature)
        except ValueError:
            raise SignatureInvalid("model.sig does not verify: not a signature") from None
        if data.get("signer") != self.name:
            raise SignatureInvalid(f"model.sig does not verify: signed by {data.get('signer')}")
        return dict(data["files"])
