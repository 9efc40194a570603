"""action.yml, the code and the README agree: every input declared, read and documented; every output written."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploygate.core.decision import Policy, decide
from deploygate.core.metrics import parse_metrics, weighted_score
from deploygate.core.model import GateResult, RunContext
from deploygate.core.settings import SETTINGS, build_config
from deploygate.shells import action as shell

ROOT = Path(__file__).resolve().parents[2]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text())


def test_action_yml_is_generated_from_the_tables() -> None:
    assert (ROOT / "action.yml").read_text() == shell.action_yml(), (
        "action.yml is out of date: run `python -m deploygate.shells.action action-yml > action.yml`"
    )


def test_inputs_are_the_settings_plus_the_action_only_inputs() -> None:
    assert list(ACTION["inputs"]) == [s.name for s in SETTINGS] + [i.name for i in shell.ACTION_INPUTS]
    for name, spec in ACTION["inputs"].items():
        assert spec["description"].strip(), name
        assert spec.get("required", False) is False, f"{name}: the runner does not enforce required"


def test_settings_inputs_have_no_default_so_params_yaml_still_applies() -> None:
    for setting in SETTINGS:
        assert "default" not in ACTION["inputs"][setting.name], setting.name
    assert ACTION["inputs"]["github-token"]["default"] == "${{ github.token }}"
    assert ACTION["inputs"]["pr-comment"]["default"] == "true"


def test_runs_the_dockerfile() -> None:
    assert ACTION["runs"] == {"using": "docker", "image": "Dockerfile"}
    assert ACTION["branding"]["icon"] and ACTION["branding"]["color"]


class RecordingEnv(dict[str, str]):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("the shell must look inputs up by name, not scan the environment")


def test_every_input_is_read_under_both_spellings() -> None:
    env = RecordingEnv()
    shell.read_inputs(env)
    for name in ACTION["inputs"]:
        hyphen, underscore = shell.input_keys(name)
        assert {hyphen, underscore} <= env.asked, name


SAMPLE_BY_KIND = {
    "path": "some/file",
    "str": "text",
    "bool": "true",
    "float": "0.9",
    "int": "10",
    "size": "500MB",
    "weights": "bleu4=1",
    "list": "en,fr",
    "guardrails": "bleu4.min=0.1",
}
SAMPLE_BY_NAME = {
    "min-improvement-threshold": "0.02",
    "champion-alias": "prod",
    "model-uri": "runs:/abc/model",
    "signing": "key",  # with signing-key given (sigstore and a key together are refused)
}


@pytest.mark.parametrize("spelling", [0, 1])
def test_every_settings_input_reaches_the_config(spelling: int) -> None:
    values = {
        s.name: SAMPLE_BY_NAME.get(s.name) or (s.choices[-1] if s.choices else SAMPLE_BY_KIND[s.kind])
        for s in SETTINGS
    }
    env = {shell.input_keys(k)[spelling]: v for k, v in values.items()}
    inputs = shell.read_inputs(env)
    cfg = build_config(inputs.given, {}, source_names=inputs.source_names)
    assert cfg.explicit == frozenset(values)
    for s in SETTINGS:
        if s.kind == "bool":
            assert getattr(cfg, s.attr) is True, s.name
    assert cfg.min_improvement_threshold == 0.02 and cfg.champion_alias == "prod"
    assert cfg.max_shard_size == 500_000_000


def _result() -> GateResult:
    cfg = build_config({})
    metrics = parse_metrics(
        {"bleu1": 0.5, "bleu2": 0.4, "bleu3": 0.3, "bleu4": 0.2, "rougeL_precision": 0.6}, cfg.weights
    )
    score = weighted_score(metrics, cfg.weights)
    return GateResult(
        status="skipped",
        config=cfg,
        context=RunContext(),
        metrics=metrics,
        candidate=score,
        baseline=None,
        decision=decide(score.score, None, Policy()),
        started_at="",
        finished_at="",
    )


def test_every_output_is_declared_and_written() -> None:
    assert list(ACTION["outputs"]) == list(shell.OUTPUTS)
    assert set(_result().outputs()) == set(ACTION["outputs"]), "GateResult.outputs() and action.yml disagree"
    assert set(shell._empty_outputs("x")) == set(ACTION["outputs"]), (
        "the failure path must write every output"
    )


def test_reference_documents_every_input_and_output() -> None:
    reference = (ROOT / "docs" / "reference.md").read_text()
    stale = "docs/reference.md is stale: regenerate with `python -m deploygate.shells.docs --write docs/reference.md`"
    assert shell.inputs_markdown() in reference, stale
    assert shell.outputs_markdown() in reference, stale
    for name in [*ACTION["inputs"], *ACTION["outputs"]]:
        assert f"`{name}`" in reference, name
    readme = (ROOT / "README.md").read_text()
    for name in ACTION["outputs"]:
        assert f"`{name}`" in readme, f"README's Action section does not name the output {name}"


def test_dockerfile_follows_the_runner_contract() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    instructions = [
        line.split()[0].upper() for line in lines if line and not line.startswith("#") and line[0].isalpha()
    ]
    assert "USER" not in instructions and "WORKDIR" not in instructions
    assert 'ENTRYPOINT ["python", "/app/entrypoint.py"]' in lines
    assert re.search(r"^FROM python:3\.\d+-slim", "\n".join(lines), re.M)
    assert any(line.startswith("ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") for line in lines)


def test_the_prebuilt_action_is_this_action_on_this_versions_image() -> None:
    prebuilt = yaml.safe_load((ROOT / "prebuilt" / "action.yml").read_text())
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert prebuilt["runs"] == {
        "using": "docker",
        "image": f"docker://ghcr.io/deploygate/deploygate:{version}",
    }
    assert {k: v for k, v in prebuilt.items() if k != "runs"} == {
        k: v for k, v in ACTION.items() if k != "runs"
    }
    release = yaml.safe_load((ROOT / ".github" / "workflows" / "release.yml").read_text())
    steps = release["jobs"]["image"]["steps"]
    assert any("scripts/prebuilt_action.py --release" in str(s.get("run", "")) for s in steps)
    assert release["jobs"]["image"]["permissions"] == {
        "contents": "read",
        "packages": "write",
        "id-token": "write",
        "attestations": "write",
    }
