"""Run `python entrypoint.py` the way the GitHub runner runs the container action (helpers; fixtures in conftest.py).

The runner sets INPUT_<NAME> (hyphens kept) for every input action.yml declares, with its default
or "" when none; points GITHUB_OUTPUT / GITHUB_STEP_SUMMARY / GITHUB_EVENT_PATH at files; runs in
the workspace. `ActionHarness.run` does exactly that against the session's real MLflow server and
parses GITHUB_OUTPUT with the runner's rules (a malformed file fails the test, as it fails a step).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.github_api_server import GitHubApi
from tests.mlflow_fixtures import MlflowServer

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "entrypoint.py"
REPO = "octo/gate"

GOOD = {
    "bleu1": 0.52,
    "bleu2": 0.41,
    "bleu3": 0.33,
    "bleu4": 0.27,
    "rougeL_precision": 0.61,
    "rouge1_precision": 0.7,
}
BETTER = {k: min(1.0, v + 0.05) for k, v in GOOD.items()}
WORSE = {k: v - 0.05 for k, v in GOOD.items()}


def action_inputs() -> dict[str, Any]:
    return dict(yaml.safe_load((ROOT / "action.yml").read_text())["inputs"])


def parse_github_output(text: str) -> dict[str, str]:
    """GITHUB_OUTPUT as the runner reads it: `name=value` or `name<<DELIM` ... `DELIM`."""
    out: dict[str, str] = {}
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line:
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            value: list[str] = []
            while i < len(lines) and lines[i] != delimiter:
                value.append(lines[i])
                i += 1
            assert i < len(lines), f"no closing delimiter for output {name!r}: the runner would fail the step"
            i += 1
            assert name not in out, f"output {name!r} written twice"
            out[name] = "\n".join(value)
        else:
            assert "=" in line, f"invalid GITHUB_OUTPUT line {line!r}: the runner would fail the step"
            name, value_text = line.split("=", 1)
            out[name] = value_text
    return out


@dataclass
class ActionRun:
    rc: int
    stdout: str
    stderr: str
    output_text: str
    outputs: dict[str, str]
    summary: str
    workspace: Path

    def commands(self, name: str) -> list[str]:
        """Workflow command lines `::name ...::message` from stdout and stderr."""
        return [
            line
            for line in (self.stdout + "\n" + self.stderr).splitlines()
            if line.startswith(f"::{name}::") or line.startswith(f"::{name} ")
        ]

    def result_files(self) -> dict[str, str]:
        folder = self.workspace / "results" / "deployment"
        return {p.name: p.read_text() for p in folder.glob("*")} if folder.is_dir() else {}


class ActionHarness:
    def __init__(self, tmp_path: Path, mlflow: MlflowServer, registry: str, experiment: str) -> None:
        self.tmp = tmp_path
        self.mlflow = mlflow
        self.registry = registry
        self.experiment = experiment
        self.workspace = tmp_path / "workspace"
        self.runs = 0
        self.write_workspace(GOOD)

    def write_workspace(self, metrics: dict[str, float]) -> None:
        ws = self.workspace
        (ws / "results" / "evaluations").mkdir(parents=True, exist_ok=True)
        (ws / "results" / "evaluations" / "metrics.json").write_text(json.dumps(metrics))
        model = ws / "model"
        model.mkdir(exist_ok=True)
        (model / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16, "metrics": metrics}))
        (ws / "results" / "fine_tuned_model_location.json").write_text(
            json.dumps({"local_path": "../model", "model_name": "tiny", "fine_tuned": True})
        )

    def run(
        self,
        inputs: dict[str, str] | None = None,
        *,
        event_name: str = "push",
        payload: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        underscore_inputs: dict[str, str] | None = None,
        sha: str | None = None,
        api: GitHubApi | None = None,
    ) -> ActionRun:
        self.runs += 1
        files = self.tmp / f"run{self.runs}"
        files.mkdir()
        output, summary, event = files / "set_output", files / "step_summary", files / "event.json"
        output.write_text("")
        summary.write_text("")
        event.write_text(json.dumps(payload or {}))
        given = {
            "registry-name": self.registry,
            "experiment-name": self.experiment,
            "skip-hf-push": "true",
            **(inputs or {}),
        }
        full: dict[str, str] = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(files),
            "LANG": "C.UTF-8",
            "HF_HUB_DISABLE_XET": "1",
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
            "CI": "true",
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(self.workspace),
            "GITHUB_EVENT_NAME": event_name,
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_OUTPUT": str(output),
            "GITHUB_STEP_SUMMARY": str(summary),
            "GITHUB_REPOSITORY": REPO,
            "GITHUB_SHA": sha or uuid.uuid4().hex + "00000000",
            "GITHUB_REF": "refs/heads/main",
            "GITHUB_ACTOR": "octocat",
            "GITHUB_RUN_ID": "4242",
            "GITHUB_SERVER_URL": "https://github.example",
            "GITHUB_API_URL": api.url if api else "http://127.0.0.1:9",
            "MLFLOW_TRACKING_URI": self.mlflow.uri,
        }
        for name, spec in action_inputs().items():  # what the runner does for every declared input
            default = spec.get("default")
            if default == "${{ github.token }}":
                default = api.state.token if api else ""
            full[f"INPUT_{name.upper()}"] = given.get(name, "" if default is None else str(default))
        for name, value in (underscore_inputs or {}).items():
            full.pop(f"INPUT_{name.upper()}", None)
            full[f"INPUT_{name.upper().replace('-', '_')}"] = value
        full.update(env or {})
        proc = subprocess.run(
            [sys.executable, str(ENTRYPOINT)],
            cwd=self.workspace,
            env=full,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        text = output.read_text()
        return ActionRun(
            rc=proc.returncode,
            stdout=proc.stdout,
            stderr=proc.stderr,
            output_text=text,
            outputs=parse_github_output(text),
            summary=summary.read_text(),
            workspace=self.workspace,
        )

    def versions(self) -> list[str]:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=self.mlflow.uri)
        return sorted(
            v.version for v in client.search_model_versions(f"name='{self.registry}'", max_results=100)
        )

    def champion(self) -> str | None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            return str(
                MlflowClient(tracking_uri=self.mlflow.uri)
                .get_model_version_by_alias(self.registry, "champion")
                .version
            )
        except MlflowException:
            return None


def pr_payload(number: int = 7, *, fork: bool = False) -> dict[str, Any]:
    head_repo = {"full_name": "stranger/gate" if fork else REPO, "fork": fork}
    return {
        "action": "synchronize",
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"ref": "feature", "sha": "ab" * 20, "repo": head_repo},
            "base": {"ref": "main", "repo": {"full_name": REPO, "fork": False}},
        },
        "repository": {"full_name": REPO},
    }


def dispatch_payload(force: object) -> dict[str, Any]:
    return {
        "inputs": {"force": force, "reason": "hotfix rollout"},
        "ref": "refs/heads/main",
        "repository": {"full_name": REPO},
    }
