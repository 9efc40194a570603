"""The Hub stage: fetch the candidate, merge its LoRA adapter, add tokenizer and model card, push.

A service over three adapters (registry for the candidate's files, merge, hub), given to the
pipeline as its `shipper`. It never moves the champion: the pipeline does that after `ship`
returns. Idempotent per registry version: the Hub commit is tagged `v<version>`, and a re-run that
finds the tag reuses that commit instead of building and pushing again — but only when the tag's
`deploygate.json` says it was made for this very version (a tag is never trusted by its name). The
folder is built from what MLflow recorded for the version (its registration, its gate run, its
creation time), so building it again gives the same bytes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from deploygate.core.decision import Baseline
from deploygate.core.errors import AdapterError, ConfigError, ModelSourceError, ResourceError
from deploygate.core.hub_names import hub_like, validate_hf_model_id
from deploygate.core.model import Candidate, FileDigest, HubPush, ModelSource, ShipRequest
from deploygate.core.provenance import RECORD_FILE, VersionFacts, file_sha256, record_text
from deploygate.core.records import local_ui_command
from deploygate.core.render.card import (
    AdapterFacts,
    CardBaseline,
    CardDecision,
    CardInputs,
)
from deploygate.core.render.verdict import verdict_text
from deploygate.core.resources import Needs, deploy_needs, describe, shortfall
from deploygate.core.settings import GateConfig
from deploygate.core.shard_plan import ByteRange, OutputShard, format_size
from deploygate.core.signing import SIGNATURE_FILE, VERDICT_FILE, folder_digests
from deploygate.core.tokenizer import fine_tune_tokenizer, tokenizer_files
from deploygate.ports import (
    AdapterSummary,
    CardRenderer,
    Hub,
    Machine,
    Merger,
    MergeSummary,
    Registry,
    Signer,
)

log = logging.getLogger("deploygate.shipping")

TORCH_CPU = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"


def find_adapter_dir(root: Path) -> Path:
    """The folder holding adapter_config.json: the root, `peft/` (the seed's `model/peft`), or the
    shallowest one below."""
    for candidate in (root, root / "peft", root / "model" / "peft", root / "adapter"):
        if (candidate / "adapter_config.json").is_file():
            return candidate
    found = sorted(root.rglob("adapter_config.json"), key=lambda p: len(p.parts))
    if not found:
        raise ModelSourceError(
            f"model: no adapter_config.json under {root}; the candidate must be a peft LoRA adapter "
            "(the E-commerce-Chatbot training logs it under model/peft)"
        )
    return found[0].parent


def chat_template_of(folder: Path) -> str | None:
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        except (ValueError, AttributeError):
            return None
        return value if isinstance(value, str) else None
    return None


class ShardBar(Protocol):
    """A progress bar over the shards of a streamed push (tqdm's `update` / `close`)."""

    def update(self, n: int = 1) -> Any: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class _Base:
    """Where the base model's files are: a local folder, or a sparse copy of a Hub repo at `revision`
    whose weight bytes are fetched shard by shard."""

    dir: Path
    repo_id: str | None = None
    revision: str | None = None


@dataclass
class _Built:
    """The folder the Hub gets, and the files of it that were staged on the Hub (and may be gone)."""

    stage: Path
    staged: dict[str, FileDigest] = field(default_factory=dict)


class HubShipper:
    """Builds the folder the Hub gets and pushes it (or only exports it, without a repo id).

    A Hub push of a merged model streams: for each output shard, the base bytes it needs are fetched,
    merged, the shard written, uploaded ahead of the commit and deleted; then one commit holds them all
    with the side files. Peak disk is about two shards. An export (hf-export-dir) writes the whole folder.
    """

    def __init__(
        self,
        hub: Hub | None,
        registry: Registry,
        merger: Merger,
        cards: CardRenderer,
        *,
        push: bool,
        signer: Signer | None = None,
        shard_bar: Callable[[int], ShardBar] | None = None,
        machine: Machine | None = None,
    ) -> None:
        self.hub = hub
        self.machine = machine
        self.registry = registry
        self.merger = merger
        self.cards = cards
        self.signer = signer
        self.push = push and hub is not None
        self.shard_bar = shard_bar
        self._prefetch: tempfile.TemporaryDirectory[str] | None = None
        self._fetched: dict[ModelSource, Path] = {}

    @classmethod
    def create(
        cls,
        cfg: GateConfig,
        registry: Registry,
        hub: Hub,
        merger: Merger,
        cards: CardRenderer,
        signer: Signer | None = None,
        *,
        shard_bar: Callable[[int], ShardBar] | None = None,
        machine: Machine | None = None,
    ) -> HubShipper:
        """Check the Hub settings (repo id, card template) before any write, then build the stage."""
        push = bool(cfg.hf_model_id) and not cfg.skip_hf_push
        if push:
            validate_hf_model_id(str(cfg.hf_model_id))
        if cfg.create_model_card and cfg.card_template is not None:
            cards.check(Path(cfg.card_template))  # before any write, not after the merge
        return cls(
            hub, registry, merger, cards, push=push, signer=signer, shard_bar=shard_bar, machine=machine
        )

    def preflight(self, candidate: Candidate, config: GateConfig) -> None:
        """Check what shipping will need from the candidate before the pipeline writes anything:
        its adapter_config.json and the base model it names. Raises InputError (exit 2).

        A remote candidate (run / model URI) is downloaded here, a read, and `ship` reuses it."""
        source = candidate.source
        if source is None:
            return
        if self.signer is not None:
            self.signer.preflight()  # an unusable key, or no OIDC token: before the first write
        if config.merge and (missing := self.merger.missing_modules()):
            raise ConfigError(
                f"merge: merging the LoRA adapter needs {', '.join(missing)}, not installed here; install "
                f"'deploygate[merge]' (pip install 'deploygate[merge]', with torch's CPU build first: {TORCH_CPU}), "
                "or set merge: false to push the adapter alone"
            )
        if self.push:
            assert self.hub is not None and config.hf_model_id
            if not self.hub.token:
                raise ConfigError(
                    f"hf-token: pushing to {config.hf_model_id} needs a Hugging Face write token and none is set; set "
                    "HF_TOKEN (or HUGGINGFACE_HUB_TOKEN, or the action's hf-token input), or pass --skip-hf-push"
                )
            log.info("%s", self.hub.check_repo_access(config.hf_model_id))  # HubError when it cannot write
        fetched = self._fetch(source, self._prefetch_dir())
        info = self.merger.inspect(find_adapter_dir(fetched))
        base_name = config.base_model or info.base_model_name_or_path
        if not base_name:
            raise AdapterError(
                f"base-model: {find_adapter_dir(fetched) / 'adapter_config.json'} names no "
                "base_model_name_or_path; set base-model"
            )
        if Path(base_name).is_dir():
            if not (Path(base_name) / "config.json").is_file():
                raise AdapterError(
                    f"base-model: the folder {base_name} has no config.json, so it is not a saved model; "
                    "set base-model to the folder save_pretrained wrote (or a Hub id)"
                )
        elif not hub_like(base_name) or self.hub is None:
            raise AdapterError(
                f"base-model: {base_name!r} is neither a local folder nor a Hub model id; set base-model "
                "(or the adapter's base_model_name_or_path) to one"
            )
        elif self.hub.head(base_name) is None:
            raise AdapterError(
                f"base-model: {base_name!r} is not a model on {self.hub.endpoint} (or not visible to this token); "
                "set base-model (or the adapter's base_model_name_or_path) to a local folder or a Hub id you can read"
            )
        if config.merge:
            self.check_resources(config, base_name)

    def check_resources(self, config: GateConfig, base_name: str) -> str | None:
        """ResourceError (before any download) when this machine clearly lacks what the deploy needs."""
        if self.machine is None:
            return None
        return check_resources(
            config, base_name, hub=self.hub, merger=self.merger, machine=self.machine, push=self.push
        )

    def _prefetch_dir(self) -> Path:
        if self._prefetch is None:
            self._prefetch = tempfile.TemporaryDirectory(prefix="deploygate-candidate-")
        return Path(self._prefetch.name) / "candidate"

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.cleanup()
            self._prefetch = None

    def ship(self, request: ShipRequest) -> HubPush | None:
        try:
            return self._ship(request)
        finally:
            self.close()

    def _ship(self, request: ShipRequest) -> HubPush | None:
        cfg = request.config
        tag = f"v{request.version}"
        facts = self.registry.version_facts(cfg.registry_name, request.version)
        existing = None
        if self.push:
            assert self.hub is not None and cfg.hf_model_id
            # HubError when the tag was made for another version (a recreated or renamed model)
            existing = self.hub.tag_for(
                cfg.hf_model_id, tag, facts.identity, recorded_commit=facts.hub_commit
            )
            if existing is not None and cfg.hf_export_dir is None:
                log.info(
                    "Hub %s already has %s (%s): not building or pushing again",
                    cfg.hf_model_id,
                    tag,
                    existing.url,
                )
                return self._main_holds(cfg, tag, existing)
            if existing is None and cfg.hf_export_dir is None:
                # a run that died, or whose tag call failed, after its commit: tag that commit
                adopted = self.hub.adopt_push(
                    cfg.hf_model_id, tag, _title_prefix(cfg, request.version), facts.identity
                )
                if adopted is not None:
                    return self._main_holds(cfg, tag, adopted)
        with tempfile.TemporaryDirectory(prefix="deploygate-ship-") as tmp:
            built = self._build(request, Path(tmp), facts, stream=streams(cfg, push=self.push))
            stage = built.stage
            if cfg.hf_export_dir is not None:
                export = Path(cfg.hf_export_dir)
                if export.exists():
                    shutil.rmtree(export)
                shutil.copytree(stage, export)
                log.info("exported the Hub folder to %s", export)
            if not self.push:
                log.info("no Hub push (%s)", "skip-hf-push" if cfg.skip_hf_push else "no hf-model-id")
                return None
            if existing is not None:  # the tag holds this version already (a signature is never made twice)
                return self._main_holds(cfg, tag, existing)
            commit = self._with_signature(self._push(request, facts, built, tag), stage)
        log.info("Hub commit %s", commit.url)
        return commit

    def _with_signature(self, commit: HubPush, stage: Path) -> HubPush:
        """The push, with the SHA-256 of the model.sig it holds (recorded on the version)."""
        if self.signer is None:
            return commit
        return replace(
            commit, signature_sha256=file_sha256(stage / SIGNATURE_FILE), signing=self.signer.method
        )

    def _push(self, request: ShipRequest, facts: VersionFacts, built: _Built, tag: str) -> HubPush:
        """One commit of the built folder (and the shards staged ahead), tagged `tag`."""
        cfg = request.config
        assert self.hub is not None and cfg.hf_model_id
        score = facts.score if facts.score is not None else request.score
        message = f"{_title_prefix(cfg, request.version)} weighted score {score:.4f} ({facts.verdict or request.verdict})"
        local = [p for p in built.stage.rglob("*") if p.is_file()]
        log.info(
            "pushing %d files (%.1f MB) to %s as %s%s",
            len(local),
            sum(p.stat().st_size for p in local) / 1e6,
            cfg.hf_model_id,
            tag,
            f", with {len(built.staged)} shard(s) uploaded ahead" if built.staged else "",
        )
        return self.hub.push(
            cfg.hf_model_id,
            built.stage,
            commit_message=message,
            private=cfg.hf_private,
            tag=tag,
            staged=sorted(built.staged),
        )

    def _main_holds(self, cfg: GateConfig, tag: str, tagged: HubPush) -> HubPush:
        """A failed run may have put main back to the champion's files: main must hold this version."""
        assert self.hub is not None and cfg.hf_model_id
        on_main = self.hub.sync_main(
            cfg.hf_model_id,
            tag,
            commit_message=(f"deploygate: {cfg.registry_name} {tag} again (files of tag {tag}, re-run)"),
        )
        return on_main or tagged

    def sync(self, config: GateConfig, version: str, why: str) -> HubPush | None:
        """Make the Hub's main hold the files pushed for `version` (tag `v<version>`): after a run
        that pushed but could not promote, or when concurrent runs pushed in another order than
        the champion alias settled. None when nothing is pushed or the version has no tag; HubError
        when the tag was made for another version (it is never restored)."""
        if not self.push:
            return None
        assert self.hub is not None and config.hf_model_id
        tag = f"v{version}"
        facts = self.registry.version_facts(config.registry_name, version)
        if (
            self.hub.tag_for(config.hf_model_id, tag, facts.identity, recorded_commit=facts.hub_commit)
            is None
        ):
            log.warning("Hub %s has no tag %s: main left as it is", config.hf_model_id, tag)
            return None
        return self.hub.sync_main(
            config.hf_model_id,
            tag,
            commit_message=(f"deploygate: restore {config.registry_name} {tag} ({why})"),
        )

    # --- building the folder -------------------------------------------------------------------

    def _fetch(self, source: ModelSource, into: Path) -> Path:
        if source.local_path is not None:
            return source.local_path
        if source not in self._fetched:  # preflight may have downloaded it already
            self._fetched[source] = self.registry.download(source, into)
        return self._fetched[source]

    def _base(self, name: str, into: Path, *, stream: bool = False) -> _Base:
        path = Path(name)
        if path.is_dir():
            return _Base(path)
        if not hub_like(name) or self.hub is None:
            raise AdapterError(
                f"base-model: {name!r} is neither a local folder nor a Hub model id; set base-model "
                "(or the adapter's base_model_name_or_path) to one"
            )
        if stream:
            revision = self.hub.base_skeleton(name, into)
            if revision is not None:
                log.info(
                    "base model %s@%s: headers read, weights fetched shard by shard", name, revision[:12]
                )
                return _Base(into, name, revision)
            log.info("base model %s has no safetensors weights: downloading all of it", name)
        log.info("downloading the base model %s", name)
        return _Base(self.hub.snapshot(name, into))

    def _build(self, request: ShipRequest, work: Path, facts: VersionFacts, *, stream: bool) -> _Built:
        """The folder the Hub gets: merged model (or adapter), tokenizer, card, and deploygate.json
        (what it was built for, and the SHA-256 of every other file); with `stream`, each merged shard
        is staged on the Hub as soon as it is written and its file deleted (its digest kept for
        deploygate.json and the commit)."""
        cfg = request.config
        source = request.candidate.source
        assert source is not None
        fetched = self._fetch(source, work / "candidate")
        adapter_dir = find_adapter_dir(fetched)
        info = self.merger.inspect(adapter_dir)
        base_name = cfg.base_model or info.base_model_name_or_path
        if not base_name:
            raise AdapterError(
                f"base-model: {adapter_dir / 'adapter_config.json'} names no base_model_name_or_path; set base-model"
            )
        base = self._base(base_name, work / "base", stream=stream)
        base_dir = base.dir
        stage = work / "stage"

        sink = _HubSink(self.hub, cfg, base, self.shard_bar) if stream and self.hub is not None else None
        report = self._weights(cfg, base_dir, adapter_dir, stage, sink)
        for warning in report.warnings:
            log.warning("%s", warning)
        log.info(
            "%s: %d tensors (%d merged), %d shard(s), %.1f MB",
            report.method,
            report.tensors_total,
            report.tensors_merged,
            len(report.shards),
            report.bytes_written / 1e6,
        )
        _use_fine_tune_tokenizer(stage, adapter_dir, fetched)
        if cfg.create_model_card:
            (stage / "README.md").write_text(
                self.card(request, info, base_name, base_dir, stage, facts), encoding="utf-8"
            )
        if self.signer is not None and request.result is not None:
            (stage / VERDICT_FILE).write_text(verdict_text(request.result), encoding="utf-8")
        staged = dict(sink.staged) if sink is not None else {}
        # every file, hashed once, on every core; the shards uploaded ahead by the digest they went up with
        digests = {path: digest.sha256 for path, digest in staged.items()} | folder_digests(stage)
        digests.pop(RECORD_FILE, None)
        (stage / RECORD_FILE).write_text(record_text(facts.identity, digests), encoding="utf-8")
        if self.signer is not None:
            self._sign(stage, digests, f"{cfg.hf_model_id or cfg.registry_name}@v{request.version}")
        return _Built(stage, staged)

    def _weights(
        self, cfg: GateConfig, base_dir: Path, adapter_dir: Path, stage: Path, sink: _HubSink | None
    ) -> MergeSummary:
        """The merged model (each shard handed to `sink` as it is written, when there is one), or the
        adapter alone when merge is off."""
        if not cfg.merge:
            return self.merger.copy_adapter_only(adapter_dir, stage, base_dir)

        def progress(done: int, total: int, shard: str) -> None:
            log.debug("merge: %d/%d tensors (%s)", done, total, shard)

        try:
            report = self.merger.merge(
                base_dir, adapter_dir, stage, progress, max_shard_bytes=cfg.max_shard_size, sink=sink
            )
            if sink is not None:
                sink.finish()
        finally:
            if sink is not None:
                sink.close()
        return report

    def _sign(self, stage: Path, digests: dict[str, str], model_name: str) -> None:
        """model.sig over every file of the folder, from the digests deploygate.json was made of
        (each file is hashed once) and deploygate.json's own."""
        assert self.signer is not None
        signed = {**digests, RECORD_FILE: file_sha256(stage / RECORD_FILE)}
        (stage / SIGNATURE_FILE).write_bytes(self.signer.sign_digests(signed, model_name=model_name))
        log.info("signed %d files (%s): %s", len(signed), self.signer.method, SIGNATURE_FILE)

    def card(
        self,
        request: ShipRequest,
        info: AdapterSummary,
        base_name: str,
        base_dir: Path,
        stage: Path,
        facts: VersionFacts,
    ) -> str:
        """The model card of the version: its values are the ones MLflow recorded for the version
        (score, metrics, weights, decision, the champion it beat, gate run, creation time), so a
        re-run renders the same bytes; versions registered before those tags existed fall back to
        this run's values."""
        request = _as_recorded(request, facts)
        cfg = request.config
        on_hub = hub_like(base_name) and not Path(base_name).is_dir()
        card_base = base_name if on_hub else _declared_name(base_dir)
        repo_id = cfg.hf_model_id or _slug(cfg.registry_name)
        inputs = CardInputs(
            repo_id=repo_id,
            base_model=card_base,
            registry_name=cfg.registry_name,
            registry_version=request.version,
            weighted_score=request.score,
            metrics=dict(request.candidate.metrics.values),
            weights=dict(cfg.weights.values),
            decision=CardDecision(request.verdict, request.reason, forced=request.verdict == "forced"),
            adapter=_adapter_facts(info, merged=cfg.merge),
            created_at=facts.identity.created or request.created_at,
            baseline=facts.baseline if facts.baseline_recorded else _card_baseline(request.baseline),
            chat_template=chat_template_of(stage),
            mlflow_run_url=facts.gate_run_url or request.mlflow_run_url,
            mlflow_model_url=facts.version_url or request.model_version_url,
            license=cfg.hf_license,
            language=cfg.hf_language,
            tags=cfg.hf_tags,
            git_sha=facts.git_sha or request.context.git_sha,
            # without a repo id the folder is only exported: its usage code loads it from there
            model_path=str(Path(cfg.hf_export_dir).resolve())
            if cfg.hf_export_dir and not cfg.hf_model_id
            else None,
            base_model_on_hub=on_hub,
            # the run that registered the version, as recorded on it (a re-run renders the same card)
            mlflow_run_id=facts.identity.gate_run_id or request.mlflow_run_id,
            mlflow_ui_command=local_ui_command(cfg.mlflow_tracking_uri),
        )
        return self.cards.render(inputs, cfg.card_template)


def streams(config: GateConfig, *, push: bool) -> bool:
    """Whether a deploy streams its merged model to the Hub shard by shard (else it builds the folder:
    an export, no push, or an adapter-only push)."""
    return push and config.merge and config.hf_export_dir is None


def deploy_needs_of(
    config: GateConfig, base_name: str, *, hub: Hub | None, merger: Merger, push: bool
) -> Needs | None:
    """What a deploy of `base_name` needs of disk and memory, from its safetensors headers alone
    (a Hub base: its file list and headers by range request); None when they are not safetensors."""
    local = Path(base_name).is_dir()
    if local:
        sizes = merger.weights_sizes(Path(base_name))
    else:
        sizes = hub.safetensors_sizes(base_name) if hub is not None else None
    if sizes is None:
        return None
    return deploy_needs(
        sizes[0],
        sizes[1],
        max_shard_bytes=config.max_shard_size,
        streamed=streams(config, push=push),
        base_downloaded=not local,
        exported=config.hf_export_dir is not None,
    )


def check_resources(
    config: GateConfig, base_name: str, *, hub: Hub | None, merger: Merger, machine: Machine, push: bool
) -> str | None:
    """ResourceError when this machine clearly lacks the disk (under the temporary folder, where a
    deploy works) or the memory the deploy needs; else one line on what it needs and has (None when
    that cannot be told before the download)."""
    needs = deploy_needs_of(config, base_name, hub=hub, merger=merger, push=push)
    if needs is None:
        return None
    work = tempfile.gettempdir()
    free, memory = machine.free_disk(Path(work)), machine.available_memory()
    problem = shortfall(needs, free, memory, work)
    if problem is not None:
        raise ResourceError(problem)
    line = describe(needs, free, memory, work)
    log.info("resources: %s", line)
    return line


def _adapter_facts(info: AdapterSummary, *, merged: bool) -> AdapterFacts:
    targets = info.target_modules
    return AdapterFacts(
        r=info.r,
        lora_alpha=info.lora_alpha,
        target_modules=(targets,) if isinstance(targets, str) else tuple(targets or ()),
        use_rslora=info.use_rslora,
        merged=merged,
    )


def _card_baseline(baseline: Baseline | None) -> CardBaseline | None:
    """The champion this run compared with (for a version registered before the baseline tag)."""
    return (
        None if baseline is None else CardBaseline(baseline.version, baseline.score, dict(baseline.metrics))
    )


def _as_recorded(request: ShipRequest, facts: VersionFacts) -> ShipRequest:
    """The request with what the version recorded at registration in place of this run's values."""
    candidate = request.candidate
    if facts.metrics is not None:
        candidate = replace(candidate, metrics=replace(candidate.metrics, values=dict(facts.metrics)))
    config = request.config
    if facts.weights is not None:
        config = replace(config, weights=replace(config.weights, values=dict(facts.weights)))
    return replace(
        request,
        config=config,
        candidate=candidate,
        score=facts.score if facts.score is not None else request.score,
        verdict=facts.verdict or request.verdict,
        reason=facts.reason if facts.reason is not None else request.reason,
    )


def _title_prefix(cfg: GateConfig, version: str) -> str:
    """How every push of a version's files starts its commit title (what adopt_push looks for)."""
    return f"deploygate: {cfg.registry_name} v{version},"


def _declared_name(base_dir: Path) -> str:
    """A local base model's own name (config.json `_name_or_path`) when Hub-like, else its folder name."""
    try:
        declared = json.loads((base_dir / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        declared = None
    if isinstance(declared, str) and hub_like(declared):
        return declared
    return _slug(base_dir.name)


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
    return slug[:96]


def _use_fine_tune_tokenizer(stage: Path, adapter_dir: Path, fetched: Path) -> None:
    """The fine-tune's tokenizer wins over the one the merge took (the adapter folder's, else the
    base model's): when the fine-tune keeps it beside the adapter (the seed's run `tokenizer`
    folder), it replaces the merge's whole: a base file the fine-tune lacks (a `tokenizer.model`
    beside its `tokenizer.json`, a `special_tokens_map.json`) never stays to be mixed with it."""
    tokenizer_dir = fine_tune_tokenizer(adapter_dir, fetched)
    if tokenizer_dir is None or tokenizer_dir == adapter_dir:
        return  # none, or the one the merge copied already
    for name in tokenizer_files(stage):
        (stage / name).unlink()
    for name in tokenizer_files(tokenizer_dir):
        shutil.copy2(tokenizer_dir / name, stage / name)


class _Stopped(Exception):
    """Raised from a download's `arrived` callback to stop it (the merge failed or the push ended)."""


class _Arrivals:
    """How far each fetched range of one shard is on disk, for the merge waiting on it: the download
    thread reports (`arrived`, `done`, `failed`), `wait` blocks until a tensor's bytes are readable."""

    def __init__(self, ranges: Sequence[ByteRange]) -> None:
        self.ranges = tuple(ranges)
        self._ends = {r: r.start for r in self.ranges}
        self._state = threading.Condition()
        self._done = False
        self._error: BaseException | None = None
        self._stop = False

    def arrived(self, byte_range: ByteRange, end: int) -> None:
        with self._state:
            if self._stop:
                raise _Stopped(byte_range.file)
            self._ends[byte_range] = max(self._ends[byte_range], end)
            self._state.notify_all()

    def finished(self, error: BaseException | None = None) -> None:
        with self._state:
            self._done, self._error = True, error
            self._state.notify_all()

    def stop(self) -> None:
        with self._state:
            self._stop = True

    def wait(self, byte_range: ByteRange) -> None:
        """Return once `byte_range` is on disk; raise what the download raised if it failed first.
        A range no fetched range holds waits for the whole download (never read before it is there)."""
        if not byte_range.nbytes:
            return
        holder = next(
            (r for r in self.ranges if r.file == byte_range.file and r.start <= byte_range.start < r.end),
            None,
        )
        with self._state:
            while not self._done and (holder is None or self._ends[holder] < byte_range.end):
                self._state.wait()
            if self._error is not None:
                raise self._error


class _HubSink:
    """The ShardSink of a streamed push: fetches each output shard's base bytes (from the Hub: range
    requests into the sparse base, on a download thread, while the merge follows behind; nothing for a
    local folder), gives them back as the merge reads them (or once the shard is written), stages the
    shard on the Hub and deletes it. One log line per shard; a bar when one is given.

    A shard's upload runs on a worker thread while the next shard's base bytes download and, where the
    disk allows it, while that shard merges. The disk holds at most two shards' worth either way:
    - base bytes from the Hub, on a file system that punches holes: each tensor's base bytes are freed
      as soon as the merge has read them, so the shard being merged (its base bytes fetched and not yet
      read, plus its merged bytes so far) holds about one shard, and the upload before it one more;
      the next upload starts once that one is done and its file deleted;
    - a local base: nothing is fetched, the disk holds the merged shard uploading and the one merging;
    - otherwise (no hole punching), the next merge starts only once the upload is done and its file
      deleted: a shard's base bytes and one merged shard.
    `finish` waits for the last upload and raises what any upload raised."""

    def __init__(self, hub: Hub, cfg: GateConfig, base: _Base, bar: Callable[[int], ShardBar] | None) -> None:
        assert cfg.hf_model_id
        self.hub, self.repo_id, self.private, self.base = hub, cfg.hf_model_id, cfg.hf_private, base
        self.staged: dict[str, FileDigest] = {}
        self._bar_factory = bar
        self._bar: ShardBar | None = None
        self._fetched = (0, 0.0)  # bytes, seconds of the current shard's download
        self._merge_started = time.monotonic()
        self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploygate-upload")
        self._upload: Future[None] | None = None
        self._downloader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploygate-download")
        self._download: Future[None] | None = None
        self._arrivals = _Arrivals(())
        self._arrivals.finished()
        # whether freeing a tensor's base bytes worked (None: not tried yet); a local base has none
        self._punches: bool | None = True if base.revision is None else None

    def fetch(self, shard: OutputShard, index: int, total: int) -> None:
        self._fetched = (0, 0.0)
        if self.base.repo_id is not None and self.base.revision is not None:
            self._arrivals = _Arrivals(shard.needs)
            self._download = self._downloader.submit(self._get, self._arrivals)
        if not self._punches:
            self._wait_upload()  # the previous shard is on the Hub and off the disk before this one is merged
        self._merge_started = time.monotonic()
        if self._bar is None and self._bar_factory is not None and total:
            self._bar = self._bar_factory(total)

    def _get(self, arrivals: _Arrivals) -> None:
        assert self.base.repo_id is not None and self.base.revision is not None
        started = time.monotonic()
        try:
            fetched = self.hub.fetch_ranges(
                self.base.repo_id, self.base.revision, self.base.dir, arrivals.ranges, arrivals.arrived
            )
        except BaseException as exc:
            arrivals.finished(exc)
            raise
        self._fetched = (fetched, time.monotonic() - started)
        arrivals.finished()

    def ready(self, byte_range: ByteRange) -> None:
        self._arrivals.wait(byte_range)

    def consumed(self, byte_range: ByteRange) -> None:
        if self.base.revision is None or self._punches is False:
            return
        try:
            self._punches = self.hub.punch(self.base.dir, byte_range)
        except OSError as exc:  # only the disk's use changes: `release` frees these bytes
            log.debug("could not free %s of the base early (%s); merging after each upload", byte_range, exc)
            self._punches = False

    def release(self, ranges: Sequence[ByteRange]) -> None:
        if self.base.revision is not None:
            self._wait_download()
            self.hub.drop_ranges(self.base.dir, ranges)

    def written(self, shard: OutputShard, path: str, index: int, total: int) -> None:
        merged = time.monotonic() - self._merge_started
        self._wait_upload()
        self._upload = self._uploader.submit(
            self._stage, shard, Path(path), index, total, merged, self._fetched
        )

    def _stage(
        self,
        shard: OutputShard,
        local: Path,
        index: int,
        total: int,
        merged: float,
        fetched: tuple[int, float],
    ) -> None:
        size = local.stat().st_size
        started = time.monotonic()
        staged = self.hub.stage(self.repo_id, shard.name, local, private=self.private)
        uploaded = time.monotonic() - started
        self.staged[shard.name] = staged.digest
        if staged.uploaded:
            local.unlink()
        log.info(
            "shard %d/%d %s: %s; download %s, merge %s, upload %s",
            index, total, shard.name, format_size(size),
            _rate(*fetched) if fetched[0] else "none (local base)",
            _rate(size, merged), _rate(size, uploaded),
        )  # fmt: skip
        if self._bar is not None:
            self._bar.update(1)

    def _wait_upload(self) -> None:
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.result()  # raises what the upload raised

    def _wait_download(self) -> None:
        download, self._download = self._download, None
        if download is not None:
            download.result()  # raises what the download raised

    def finish(self) -> None:
        """Wait for the last upload: every shard is staged (or this raises why not)."""
        self._wait_upload()

    def close(self) -> None:
        """Stop the downloader and the uploader (after a failure too: a download still running is
        stopped at its next piece, a pending upload is waited for; their errors are dropped: the
        failure being raised already says what went wrong)."""
        self._arrivals.stop()
        for pending in (self._download, self._upload):
            if pending is not None:
                with contextlib.suppress(Exception):
                    pending.result()
        self._download = self._upload = None
        self._downloader.shutdown(wait=True)
        self._uploader.shutdown(wait=True)
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / 1e6 / max(seconds, 1e-6):.0f} MB/s"
