"""The gate's ordering guarantees, with the in-memory fakes of tests/fakes.py (no servers, < 1 s).

- nothing is written on bad input (registry, Hub, result files);
- the version is registered before the Hub push, and the push names it;
- the champion alias moves only after a successful push;
- every failure after the gate run started is recorded: on the run (FAILED, the error) and in the
  result files (status failed);
- a re-run of the same candidate reuses its version.
The same guarantees against a real MLflow server and the local Hub are tests/integration/test_faults.py.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploygate.core import records
from deploygate.core.errors import (
    AdapterError,
    ConfigError,
    DeployGateError,
    HubError,
    ModelSourceError,
    RegistryError,
)
from deploygate.core.metrics import parse_metrics
from deploygate.core.model import Candidate, GateResult, ModelSource, RunContext
from deploygate.core.provenance import RECORD_FILE, parse_record
from deploygate.core.settings import GateConfig, build_config
from deploygate.core.signature import signature_for
from deploygate.service.gate import run
from deploygate.service.ship import HubShipper
from tests.fakes import (
    FakeCards,
    FakeHub,
    FakeMerger,
    FakeRegistry,
    Faults,
    Journal,
    MemoryResultFiles,
    TickingClock,
)

REPO = "acme/qa-model"
NAME = "qa-model"
GOOD = {"bleu1": 0.5, "bleu2": 0.4, "bleu3": 0.3, "bleu4": 0.2, "rougeL_precision": 0.6}
WORSE = {k: v - 0.1 for k, v in GOOD.items()}


@dataclass
class World:
    journal: Journal
    faults: Faults
    registry: FakeRegistry
    hub: FakeHub
    merger: FakeMerger
    files: MemoryResultFiles
    tmp: Path

    def config(self, **given: object) -> GateConfig:
        return build_config(
            {"hf-model-id": REPO, "registry-name": NAME, "output-dir": str(self.tmp / "out"), **given}
        )

    def candidate(
        self, cfg: GateConfig, values: dict[str, float] = GOOD, *, adapter: object = None, source: bool = True
    ) -> Candidate:
        adapter_dir = self.tmp / "adapter"
        adapter_dir.mkdir(exist_ok=True)
        base = self.tmp / "base"
        base.mkdir(exist_ok=True)
        (base / "config.json").write_text('{"model_type": "llama"}')
        config = adapter if adapter is not None else {"base_model_name_or_path": str(base), "r": 8}
        (adapter_dir / "adapter_config.json").write_text(
            config if isinstance(config, str) else json.dumps(config)
        )
        (adapter_dir / "adapter_model.safetensors").write_bytes(b"lora")
        return Candidate(
            metrics=parse_metrics(values, cfg.weights),
            source=ModelSource(local_path=adapter_dir) if source else None,
            signature=signature_for(cfg.weights.values, cfg.metrics_scale),
        )

    def run(
        self, cfg: GateConfig, cand: Candidate, ctx: RunContext | None = None, *, hub: bool = True
    ) -> GateResult:
        shipper = HubShipper.create(cfg, self.registry, self.hub, self.merger, FakeCards()) if hub else None
        return run(
            cfg,
            ctx or RunContext(event_name="push", git_sha="a" * 40),
            cand,
            registry=self.registry,
            shipper=shipper,
            files=self.files,
            clock=TickingClock(),
            sleep=lambda _: None,
        )

    def gate_run(self) -> tuple[str, dict[str, str], str]:
        """The last gate run: id, tags, status."""
        run_id = list(self.registry.runs)[-1]
        return run_id, self.registry.runs[run_id].tags, self.registry.runs[run_id].status


@pytest.fixture
def world(tmp_path: Path) -> World:
    journal = Journal()
    faults = Faults()
    return World(
        journal,
        faults,
        FakeRegistry(journal, faults),
        FakeHub(journal, faults),
        FakeMerger(journal),
        MemoryResultFiles(journal),
        tmp_path,
    )


# --- nothing written on bad input ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "error", "words"),
    [
        ("adapter config not JSON", AdapterError, "not JSON"),
        ("adapter names no base model", AdapterError, "base_model_name_or_path"),
        ("base model neither folder nor Hub id", AdapterError, "neither a local folder nor a Hub model id"),
        ("no model location", ModelSourceError, "nothing to register"),
        ("merge extra missing", ConfigError, "pip install 'deploygate[merge]'"),
        ("no Hub token", ConfigError, "hf-token"),
    ],
)
def test_bad_input_writes_nothing(world: World, case: str, error: type[Exception], words: str) -> None:
    cfg = world.config()
    cand = {
        "adapter config not JSON": lambda: world.candidate(cfg, adapter="{r: 4"),
        "adapter names no base model": lambda: world.candidate(cfg, adapter={"r": 8}),
        "base model neither folder nor Hub id": lambda: world.candidate(
            cfg, adapter={"base_model_name_or_path": "../x y"}
        ),
        "no model location": lambda: world.candidate(cfg, source=False),
    }.get(case, lambda: world.candidate(cfg))()
    if case == "merge extra missing":
        world.merger.missing = ["torch"]
    if case == "no Hub token":
        world.hub.token = None
    with pytest.raises(error) as raised:
        world.run(cfg, cand)
    assert words in str(raised.value)
    assert world.journal == [], f"{case}: written before the input was refused: {world.journal.ops()}"


def test_a_skip_registers_and_pushes_nothing(world: World) -> None:
    world.registry.seed_champion(NAME, 0.9, GOOD)
    result = world.run(world.config(), world.candidate(world.config(), WORSE))
    assert result.status == "skipped"
    assert not {"registry.register", "registry.set_champion", "hub.push"} & set(world.journal.ops())
    assert world.gate_run()[2] == "FINISHED"


def test_a_pull_request_only_reports(world: World) -> None:
    cfg = world.config()
    result = world.run(cfg, world.candidate(cfg), RunContext(event_name="pull_request", pr_number=3))
    assert (result.status, result.decision.verdict, result.decision.deploy) == (
        "verdict-only",
        "deploy",
        False,
    )
    assert not {"registry.register", "registry.set_champion", "hub.push"} & set(world.journal.ops())


# --- version before push, alias after push -------------------------------------------------------------


def test_version_before_push_and_alias_after_it(world: World) -> None:
    old = world.registry.seed_champion(NAME, 0.1, WORSE)
    cfg = world.config()
    result = world.run(cfg, world.candidate(cfg))
    assert result.status == "deployed"
    ops = world.journal.ops()
    assert ops.index("registry.register") < ops.index("merger.merge") < ops.index("hub.push")
    assert ops.index("hub.push") < ops.index("registry.set_champion") < ops.index("registry.append_history")
    assert ops.index("registry.start_run") < ops.index("registry.register")
    assert ops[-3:] == ["files.write", "registry.log_artifacts", "registry.end_run"]
    version = result.registered_version
    assert version is not None and version != old
    assert world.registry.champion_version(NAME) == version
    # the pushed folder was built for the registered version, and the version records the push
    sha = world.hub.tags[(REPO, f"v{version}")]
    identity = parse_record(world.hub.files_at(REPO, sha)[RECORD_FILE])
    assert (
        identity is not None and identity.version == version and identity.gate_run_id == result.mlflow_run_id
    )
    assert world.registry.versions[NAME][version].tags[records.TAG_HUB_COMMIT] == sha


@pytest.mark.parametrize("failing", ["hub.push", "hub.create_tag", "registry.set_version_tags"])
def test_the_alias_moves_only_after_a_successful_push(world: World, failing: str) -> None:
    old = world.registry.seed_champion(NAME, 0.1, WORSE)
    world.faults.fail_on[failing] = 1
    cfg = world.config()
    with pytest.raises(DeployGateError):
        world.run(cfg, world.candidate(cfg))
    assert "registry.set_champion" not in world.journal.ops()
    assert world.registry.champion_version(NAME) == old
    assert [e["version"] for e in world.registry.history(NAME)] == [old]


# --- every failure recorded ----------------------------------------------------------------------------

FAILURES = [
    "registry.log_run",
    "registry.register",
    "registry.set_tags",
    "hub.push",
    "registry.set_champion",
    "registry.append_history",
    "registry.log_artifacts",
]


@pytest.mark.parametrize("failing", FAILURES)
def test_every_failure_after_the_run_started_is_recorded(world: World, failing: str) -> None:
    world.faults.fail_on[failing] = 1
    cfg = world.config()
    with pytest.raises((RegistryError, HubError)) as raised:
        world.run(cfg, world.candidate(cfg))
    assert "injected by the test" in str(raised.value)
    _, tags, status = world.gate_run()
    assert status == "FAILED"
    assert tags[records.TAG_STATUS] == "failed"
    assert f"{failing} failed" in tags[records.TAG_ERROR]
    last = world.files.written[-1]
    assert last.status == "failed" and last.error is not None and f"{failing} failed" in last.error
    assert world.journal.ops()[-1] == "registry.end_run" and world.journal[-1][-1] == "FAILED"
    if "registry.register" in world.journal.ops():  # the failed call itself is not in the journal
        # a failure after registering still reports the version (the re-run reuses it)
        assert last.registered_version == "1"
    else:
        assert last.registered_version is None


def test_a_failure_before_the_first_write_writes_no_record(world: World) -> None:
    world.faults.fail_on["registry.start_run"] = 1
    cfg = world.config()
    with pytest.raises(RegistryError):
        world.run(cfg, world.candidate(cfg))
    assert world.registry.runs == {} and world.files.written == []


# --- a re-run reuses the version ---------------------------------------------------------------------


def test_a_rerun_after_a_failed_push_reuses_the_version(world: World) -> None:
    old = world.registry.seed_champion(NAME, 0.1, WORSE)
    cfg = world.config()
    world.faults.fail_on["hub.push"] = 1
    with pytest.raises(HubError):
        world.run(cfg, world.candidate(cfg))
    assert world.files.written[-1].registered_version == "2"
    first = len(world.journal)
    result = world.run(cfg, world.candidate(cfg))
    rerun = world.journal.ops()[first:]
    assert result.status == "deployed" and result.registered_version == "2"
    assert "registry.register" not in rerun
    assert rerun.index("hub.push") < rerun.index("registry.set_champion")
    assert sorted(world.registry.versions[NAME]) == [old, "2"]
    assert world.registry.champion_version(NAME) == "2"


def test_a_forced_rerun_of_the_champion_reuses_version_and_tag(world: World) -> None:
    cfg = world.config()
    first = world.run(cfg, world.candidate(cfg))
    pushes = world.journal.ops().count("hub.push")
    again = world.run(world.config(**{"force-deploy": True}), world.candidate(cfg))
    assert again.registered_version == first.registered_version == "1"
    assert world.journal.ops().count("registry.register") == 1
    assert world.journal.ops().count("hub.push") == pushes, (
        "the tag v1 holds this version: nothing is pushed again"
    )
    assert again.hub is not None and again.hub.sha == world.hub.tags[(REPO, "v1")]
