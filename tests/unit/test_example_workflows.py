"""The example workflows: a rollback shares the deploy's concurrency group (so it never runs while a
deployment is in flight), and every `with:` they pass to deploygate is an input of action.yml."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / "examples" / "workflows"


def _load(name: str) -> dict[Any, Any]:
    return dict(yaml.safe_load((WORKFLOWS / name).read_text()))


def test_rollback_and_deploy_share_one_concurrency_group_that_never_cancels() -> None:
    deploy, rollback = _load("deploy.yml"), _load("rollback.yml")
    assert rollback["concurrency"] == deploy["concurrency"]
    assert rollback["concurrency"]["cancel-in-progress"] is False


def test_every_input_the_examples_pass_is_declared_by_the_action() -> None:
    declared = set(yaml.safe_load((ROOT / "action.yml").read_text())["inputs"])
    for path in sorted(WORKFLOWS.glob("*.yml")):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("deploygate/deploygate@"):
                    assert set(step.get("with", {})) <= declared, (path.name, set(step["with"]) - declared)
    steps = _load("rollback.yml")["jobs"]["rollback"]["steps"]
    assert any(s.get("with", {}).get("mode") == "rollback" for s in steps)


def test_the_deploy_example_signs_verifies_and_may_attest() -> None:
    job = _load("deploy.yml")["jobs"]["deploy"]
    assert job["permissions"]["id-token"] == "write"  # keyless signing and the attestation need it
    gate = next(s for s in job["steps"] if s.get("id") == "gate")
    assert gate["with"]["signing-key"] == "${{ secrets.DEPLOYGATE_SIGNING_KEY }}"  # from a secret
    assert "signing" in gate["with"]
    verify = next(s for s in job["steps"] if s.get("with", {}).get("mode") == "verify")
    assert verify["with"]["revision"] == "v${{ steps.gate.outputs.model-version }}"
    attest = next(s for s in job["steps"] if "attest-build-provenance" in str(s.get("uses")))
    ref = attest["uses"].split("@", 1)[1]
    assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref)  # pinned to a full commit
    assert attest["with"]["subject-path"].startswith(gate["with"]["hf-export-dir"])
