"""Finding 4 of issue 9: installs that work as documented. The wheel is built from this tree and
installed into fresh venvs, as a user would: `deploygate` alone and `deploygate[merge]` (versions
held to requirements.txt so the run is repeatable and pip's cache serves it). The base install
decides from metrics and from predictions with the significance test, and stops a Hub deploy or the
sqlite default before any write, naming the extra; the [merge] install deploys to the Hub. Every run
goes to the session's MLflow and Hub servers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow import MlflowClient

from tests.gatekit import SEED_METRICS, local_model, metrics_scaled, write_json
from tests.hub_server import iter_repo_files
from tests.integration.test_significance import CHAMPION, CONSISTENT, jsonl
from tests.modelfactory import make_lora_adapter, make_tiny_llama, save_tiny_tokenizer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
DEV_BIN = str(Path(sys.executable).parent)


def _sh(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel` of a copy of the package sources (building in the tree would leave build/ behind)."""
    src = tmp_path_factory.mktemp("src")
    shutil.copytree(ROOT / "deploygate", src / "deploygate", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    res = _sh([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(src)])
    assert res.returncode == 0, res.stderr
    return next(out.glob("deploygate-*.whl"))


def _venv(root: Path, *requirements: str) -> Path:
    started = time.monotonic()
    res = _sh([sys.executable, "-m", "venv", str(root)])
    assert res.returncode == 0, res.stderr
    res = _sh(
        [
            str(root / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            "--no-compile",
            "-c",
            str(ROOT / "requirements.txt"),
            *requirements,
        ]
    )
    assert res.returncode == 0, res.stderr[-3000:]
    print(
        f"\nvenv {root.name}: {time.monotonic() - started:.0f} s to create and install {' '.join(requirements)}"
    )
    return root


@pytest.fixture(scope="module")
def base_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _venv(tmp_path_factory.mktemp("venv") / "base", str(wheel))


@pytest.fixture(scope="module")
def merge_venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # torch's CPU build first, pinned, as the README says (an unpinned torch pulls the CUDA build)
    return _venv(tmp_path_factory.mktemp("venv") / "merge", "torch==2.13.0", f"{wheel}[merge]")


Gate = Callable[..., subprocess.CompletedProcess[str]]


def gate_in(venv: Path, tmp_path: Path, mlflow_uri: str | None) -> Gate:
    """Run the venv's `deploygate` as a user's shell would: nothing of the dev venv on PATH."""

    def run(
        *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
        clean["PATH"] = os.pathsep.join(p for p in clean.get("PATH", "").split(os.pathsep) if p != DEV_BIN)
        if mlflow_uri:
            clean["MLFLOW_TRACKING_URI"] = mlflow_uri
        clean.update(env or {})
        return _sh([str(venv / "bin" / "deploygate"), *args], env=clean, cwd=cwd or tmp_path)

    return run


def _common(tmp_path: Path, registry: str, experiment: str, name: str) -> list[str]:
    return [
        "--output-dir",
        str(tmp_path / name),
        "--registry-name",
        registry,
        "--experiment-name",
        experiment,
    ]


def _info(tmp_path: Path, name: str, file: str = "deployment_info.json") -> dict[str, object]:
    return dict(json.loads((tmp_path / name / file).read_text()))


def test_the_base_install_decides_from_metrics(
    base_venv, tmp_path, mlflow_server, registry_name, experiment_name
):
    probe = _sh(
        [
            str(base_venv / "bin" / "python"),
            "-c",
            "import importlib.util as u; print(sorted(m for m in "
            "('torch', 'transformers', 'peft', 'safetensors', 'sqlalchemy') if u.find_spec(m)))",
        ]
    )
    assert probe.stdout.strip() == "[]"  # a plain install: none of the extras
    gate = gate_in(base_venv, tmp_path, mlflow_server.uri)
    loc = write_json(tmp_path / "loc.json", {"local_path": str(local_model(tmp_path / "model"))})
    for name, metrics, deployed in (("first", SEED_METRICS, True), ("worse", metrics_scaled(-0.01), False)):
        res = gate(
            "--evaluation-results",
            str(write_json(tmp_path / f"{name}.json", metrics)),
            "--model-artifact-path",
            str(loc),
            "--skip-hf-push",
            *_common(tmp_path, registry_name, experiment_name, name),
            env={"GITHUB_SHA": name[0] * 40},
        )
        assert res.returncode == 0, res.stderr
        assert _info(tmp_path, name)["deployed"] is deployed


def test_the_base_install_tests_significance_from_predictions(
    base_venv, tmp_path, mlflow_server, registry_name, experiment_name
):
    gate = gate_in(base_venv, tmp_path, mlflow_server.uri)
    loc = write_json(tmp_path / "loc.json", {"local_path": str(local_model(tmp_path / "model"))})
    for name, preds in (("champ", CHAMPION), ("consistent", CONSISTENT)):
        res = gate(
            "--predictions",
            str(jsonl(tmp_path, name, preds)),
            "--model-artifact-path",
            str(loc),
            "--skip-hf-push",
            *_common(tmp_path, registry_name, experiment_name, name),
            env={"GITHUB_SHA": name[0] * 40},
        )
        assert res.returncode == 0, res.stderr
    significance = _info(tmp_path, "consistent", "model_comparison.json")["checks"]["significance"]  # type: ignore[index]
    assert significance["significant"] is True and significance["resamples"] == 1000
    assert _info(tmp_path, "consistent")["deployed"] is True


def test_the_base_install_stops_a_hub_deploy_naming_the_extra(
    base_venv, tmp_path, mlflow_server, hub_server, registry_name, experiment_name
):
    gate = gate_in(base_venv, tmp_path, mlflow_server.uri)
    # the extra is checked before the adapter is even read: a config file is all the source needs to hold
    adapter = write_json(tmp_path / "adapter" / "adapter_config.json", {"peft_type": "LORA", "r": 4}).parent
    loc = write_json(tmp_path / "loc.json", {"local_path": str(adapter)})
    res = gate(
        "--evaluation-results",
        str(write_json(tmp_path / "m.json", SEED_METRICS)),
        "--model-artifact-path",
        str(loc),
        "--hf-model-id",
        hub_server.new_repo_id("base"),
        *_common(tmp_path, registry_name, experiment_name, "hub"),
        env={"HF_TOKEN": hub_server.token, "HF_ENDPOINT": hub_server.url, "HF_HUB_DISABLE_XET": "1"},
    )
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "install 'deploygate[merge]'" in errors[0] and "torch" in errors[0], errors
    assert "Traceback" not in res.stderr
    assert MlflowClient(tracking_uri=mlflow_server.uri).get_experiment_by_name(experiment_name) is None
    assert not (tmp_path / "hub").exists()


def test_the_base_install_names_the_local_extra_for_sqlite(base_venv, tmp_path):
    gate = gate_in(base_venv, tmp_path, None)
    (tmp_path / "work").mkdir()
    write_json(tmp_path / "work" / "results" / "evaluations" / "metrics.json", SEED_METRICS)
    res = gate("--skip-hf-push", cwd=tmp_path / "work")
    assert res.returncode == 2, res.stderr
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert (
        len(errors) == 1
        and "pip install 'deploygate[local]'" in errors[0]
        and "sqlite:///mlflow.db" in errors[0]
    )
    assert "give an http(s):// server URL or sqlite" not in errors[0]  # not the URI that just failed
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == [
        "results"
    ]  # no mlflow.db, no results/deployment
    demo = gate("demo", "--dir", str(tmp_path / "demo"))
    assert demo.returncode == 2 and "install 'deploygate[merge,local]'" in demo.stderr, demo.stderr
    assert not (tmp_path / "demo").exists()


def test_the_merge_install_deploys_to_the_hub(
    merge_venv, tmp_path, mlflow_server, hub_server, registry_name, experiment_name
):
    base = make_tiny_llama(tmp_path / "base", shards=1)
    adapter = make_lora_adapter(base, tmp_path / "art" / "peft", r=4, alpha=8)
    save_tiny_tokenizer(tmp_path / "tok")
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    run = client.create_run(client.create_experiment(f"train-{uuid.uuid4().hex[:8]}"))
    client.log_artifacts(run.info.run_id, str(adapter), "model/peft")
    client.log_artifacts(run.info.run_id, str(tmp_path / "tok"), "tokenizer")
    loc = write_json(
        tmp_path / "loc.json", {"mlflow_run_id": run.info.run_id, "tracking_uri": mlflow_server.uri}
    )
    repo = hub_server.new_repo_id("merge")
    from tests.keys import key_pair

    private, public = key_pair(tmp_path / "keys")  # the install can sign and verify (its pins suffice)
    hub_env = {"HF_TOKEN": hub_server.token, "HF_ENDPOINT": hub_server.url, "HF_HUB_DISABLE_XET": "1"}
    gate = gate_in(merge_venv, tmp_path, mlflow_server.uri)
    res = gate(
        "--evaluation-results",
        str(write_json(tmp_path / "m.json", SEED_METRICS)),
        "--model-artifact-path",
        str(loc),
        "--hf-model-id",
        repo,
        "--signing-key",
        str(private),
        *_common(tmp_path, registry_name, experiment_name, "hub"),
        env={**hub_env, "GITHUB_SHA": "9" * 40},
    )
    assert res.returncode == 0, res.stderr
    info = _info(tmp_path, "hub")
    assert info["huggingface_deployed"] is True and info["hub"]["tag"] == "v1"  # type: ignore[index]
    files = dict(iter_repo_files(hub_server, repo))
    assert {"config.json", "tokenizer.json", "README.md", "model.sig", "deploygate-verdict.json"} <= set(
        files
    )
    assert any(f.endswith(".safetensors") for f in files) and "adapter_config.json" not in files
    verified = gate("verify", f"{repo}@v1", "--public-key", str(public), env=hub_env)
    assert verified.returncode == 0 and "verified:" in verified.stdout, verified.stdout + verified.stderr
