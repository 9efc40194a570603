"""`deploygate doctor` against a real server, a dead one, a local store, the local Hub server, and
broken params.yaml / .env files. Every check is one OK or FAIL line; doctor writes nothing."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from deploygate.shells.cli import main
from tests.mlflow_fixtures import free_port

pytestmark = pytest.mark.slow

LINE = re.compile(r"^(OK  |FAIL) [^:]+: \S|^     fix: \S|^all checks passed$|^\d+ checks? failed: ")


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["doctor", *argv])
    out = capsys.readouterr().out
    assert all(LINE.match(line) for line in out.splitlines()), out  # each check: OK / FAIL, and the fix
    return code, out


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.fixture
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)  # doctor fills these in os.environ; undo it afterwards
    return tmp_path


def test_doctor_ok(mlflow_server, capsys, monkeypatch, empty_cwd):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    code, out = doctor(capsys)
    assert code == 0, out
    assert f"OK   tracking URI: {mlflow_server.uri} (from MLFLOW_TRACKING_URI)" in out
    assert "OK   credentials: no credentials set" in out and "credentials accepted" not in out
    assert "OK   MLflow server: " in out and "answers without credentials" in out
    assert "OK   model registry: answers" in out and out.endswith("all checks passed\n")
    assert tree(empty_cwd) == []


def test_doctor_with_nothing_configured_creates_nothing(capsys, empty_cwd):
    code, out = doctor(capsys)
    assert code == 0, out
    assert "(from default: no MLFLOW_TRACKING_URI, no params.yaml mlflow.tracking_uri)" in out
    assert f"OK   local store: {empty_cwd / 'mlflow.db'} does not exist yet" in out
    assert "no credentials set" in out
    assert "OK   Hub: no token set and no hf-model-id" in out
    assert tree(empty_cwd) == []  # no mlflow.db, no mlartifacts/, no mlruns/


def test_doctor_opens_an_existing_local_store_without_adding_to_it(capsys, empty_cwd):
    from mlflow import MlflowClient

    MlflowClient(tracking_uri="sqlite:///mlflow.db").search_experiments(max_results=1)  # the store exists
    before = tree(empty_cwd)
    code, out = doctor(capsys)
    assert code == 0, out
    assert (
        f"OK   local store: {empty_cwd / 'mlflow.db'} opens; browse it with mlflow ui --backend-store-uri sqlite:///"
        in out
    )
    assert tree(empty_cwd) == before == ["mlflow.db"]


def test_doctor_dead_server(capsys, empty_cwd):
    uri = f"http://127.0.0.1:{free_port()}"
    code, out = doctor(capsys, "--mlflow-tracking-uri", uri)
    assert code == 1
    assert f"FAIL MLflow server: MLflow server at {uri} is unreachable" in out
    assert "     fix: check MLFLOW_TRACKING_URI" in out
    assert out.rstrip().endswith("1 check failed: see the FAIL lines above")


def test_doctor_dagshub_credentials_are_used(mlflow_server, capsys, monkeypatch, empty_cwd):
    monkeypatch.setenv("DAGSHUB_USERNAME", "someone")
    monkeypatch.setenv("DAGSHUB_USER_TOKEN", "sentinel-dagshub-token")
    code, out = doctor(capsys, "--mlflow-tracking-uri", mlflow_server.uri)
    assert code == 0, out
    assert "OK   credentials: user someone, password set" in out and "sentinel-dagshub-token" not in out
    assert "answers and accepts the credentials" in out


def test_doctor_checks_the_hub_token_whenever_one_is_set(hub_server, capsys, monkeypatch, empty_cwd):
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    code, out = doctor(capsys)  # no --hf-model-id
    assert code == 0, out
    assert re.search(r"^OK   Hub token: belongs to \S+$", out, re.M), out
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_token_the_server_knows")
    code, out = doctor(capsys)
    assert code == 1 and "FAIL Hub token: " in out, out
    assert "hf_not_a_token" not in out
    monkeypatch.delenv("HF_TOKEN")
    code, out = doctor(capsys, "--hf-model-id", "org/model")
    assert code == 1 and "FAIL Hub token: no token set, and hf-model-id is org/model" in out
    assert "     fix: set HF_TOKEN" in out
    assert tree(empty_cwd) == []


def test_doctor_bad_params(tmp_path, capsys, empty_cwd):
    bad = tmp_path / "params.yaml"
    bad.write_text("mlflow: [1, 2\n")
    code, out = doctor(
        capsys, "--config", str(bad), "--mlflow-tracking-uri", f"http://127.0.0.1:{free_port()}"
    )
    assert code == 1 and "FAIL config: " in out and "not valid YAML" in out
    bad.write_text("deployment:\n  min_improvment_threshold: 0.5\n")
    code, out = doctor(capsys, "--config", str(bad))
    assert code == 1 and "did you mean 'min_improvement_threshold'?" in out


def test_doctor_reports_a_broken_env_file_as_a_check(capsys, empty_cwd):
    (empty_cwd / ".env").write_text('MLFLOW_TRACKING_URI=http://x\nHF_TOKEN = "hf_secret_value\n')
    code, out = doctor(capsys)
    assert code == 1
    assert "FAIL .env: " in out and "line 2 (the HF_TOKEN line) cannot be parsed" in out
    assert "hf_secret_value" not in out
    assert os.environ.get("MLFLOW_TRACKING_URI") is None  # nothing half-loaded


def _huge_base(folder: Path, nbytes: int) -> Path:
    """A base model folder whose one safetensors file declares `nbytes` of weights: a sparse file, so
    it takes no disk, but its header and size say what a deploy of it would need."""
    import json
    import struct

    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    header = json.dumps(
        {"w": {"dtype": "BF16", "shape": [nbytes // 2], "data_offsets": [0, nbytes]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    with (folder / "model.safetensors").open("wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + nbytes)
    return folder


@pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")
def test_doctor_estimates_disk_and_memory_from_the_base_models_headers(
    hub_server, capsys, monkeypatch, empty_cwd, tmp_path_factory
):
    from huggingface_hub import HfApi

    from tests.modelfactory import make_tiny_llama

    base = make_tiny_llama(tmp_path_factory.mktemp("doctor") / "base", shards=3)
    repo = hub_server.new_repo_id("doctor-base")
    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    api.create_repo(repo)
    api.upload_folder(repo_id=repo, folder_path=str(base))
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    gets = len(hub_server.requests_matching("GET", r"/resolve/"))
    code, out = doctor(capsys, "--base-model", repo, "--hf-model-id", hub_server.new_repo_id("doctor"))
    assert code == 0, out
    line = next(x for x in out.splitlines() if x.startswith("OK   resources: "))
    assert "base streamed shard by shard" in line and "of disk" in line and "of memory" in line, line
    # read by headers: two small range requests per safetensors file, nothing else downloaded
    assert len(hub_server.requests_matching("GET", r"/resolve/")) - gets == 2 * 3
    code, out = doctor(capsys, "--base-model", str(base))
    assert code == 0 and "OK   resources: " in out and "as a whole folder" in out, out
    assert tree(empty_cwd) == []


def test_doctor_says_when_this_machine_lacks_the_disk_a_deploy_needs(capsys, empty_cwd, tmp_path_factory):
    base = _huge_base(tmp_path_factory.mktemp("doctor") / "huge", 4 * 10**12)  # 4 TB of weights, declared
    code, out = doctor(capsys, "--base-model", str(base))
    assert code == 1, out
    assert re.search(
        r"^FAIL resources: disk: a deploy of this 4\.0 TB model .* needs about 4\.0 TB under ", out, re.M
    )
    assert "     fix: free disk space, point TMPDIR at a larger disk, or set max-shard-size lower" in out
