"""Signed deploys end to end, with a generated key pair, against the real MLflow server and the
local Hub server: the deploy pushes model.sig and deploygate-verdict.json in the model's one
commit, `deploygate verify` passes on the pushed revision and fails naming the file for one changed
byte, an added file or a deleted one; the verdict's values are deployment_info.json's; after a
rollback, verify on main names the restored version. Keyless (Sigstore) signing needs Sigstore's
servers and is not exercised here (tests/unit/test_signing.py covers its configuration)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from huggingface_hub import HfApi
from mlflow import MlflowClient

from deploygate.shells.cli import main
from tests.gatekit import metrics_scaled
from tests.integration.test_ship import gate, seed_run  # noqa: F401  (fixtures)
from tests.keys import key_pair

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return key_pair(tmp_path / "keys")


def verify(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["verify", *args])
    out = capsys.readouterr()
    return code, out.out + out.err


def download(hub_server, repo: str, revision: str, into: Path) -> Path:
    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    api.snapshot_download(repo, revision=revision, local_dir=into, cache_dir=into.parent / "cache")
    return into


def test_signed_deploy_verify_and_tampering(
    gate,  # noqa: F811  (the fixture)
    keys,
    hub_server,
    mlflow_server,
    registry_name,
    tmp_path,
    capsys,
):
    private, public = keys
    res = gate("first", "1", extra=["--signing", "key", "--signing-key", str(private)])
    assert res.code == 0, res.err
    info = res.info()

    # one commit holds the model, its signature and the verdict
    commits = hub_server.commits(gate.repo)
    assert [c.title for c in commits[1:]] == ["initial commit"]
    pushed = commits[0].files
    assert {"model.sig", "deploygate-verdict.json", "deploygate.json", "config.json"} <= set(pushed)
    assert any(name.endswith(".safetensors") for name in pushed)
    files = {p: b.content if b.lfs_sha256 is None else b"" for p, b in pushed.items()}
    signature = files["model.sig"]
    assert json.loads(signature)["dsseEnvelope"]["payloadType"] == "application/vnd.in-toto+json"

    # the signature's digest is on the MLflow version
    mv = MlflowClient(tracking_uri=mlflow_server.uri).get_model_version(registry_name, "1")
    assert mv.tags["deploygate.signature_sha256"] == hashlib.sha256(signature).hexdigest()
    assert mv.tags["deploygate.signing"] == "key"

    # the verdict says what deployment_info.json says
    verdict = json.loads(files["deploygate-verdict.json"])
    for key in ("decision", "rule", "reason", "forced", "threshold", "weighted_score", "baseline_score"):
        assert verdict[key] == info[key], key
    assert verdict["registry"]["version"] == info["registry"]["version"] == "1"
    assert verdict["registry"]["previous_version"] == info["registry"]["previous_version"]
    assert verdict["mlflow"]["run_id"] == info["mlflow"]["run_id"]
    assert verdict["context"] == info["context"]
    comparison = res.comparison()
    assert verdict["metrics"] == comparison["candidate"]["metrics"]
    assert verdict["metric_signature"] == comparison["checks"]["comparability"]["candidate_signature"]
    assert verdict["guardrails"] == comparison["checks"]["guardrails"]

    # verify passes on the pushed revision (the tag and main), and prints the verdict
    code, out = verify(capsys, f"{gate.repo}@v1", "--public-key", str(public))
    assert code == 0, out
    assert "verified:" in out and f"{registry_name} v1" in out and info["mlflow"]["run_id"] in out
    assert verify(capsys, gate.repo, "--public-key", str(public))[0] == 0

    # the stock model_signing verifier agrees on the downloaded folder
    import model_signing

    folder = download(hub_server, gate.repo, "v1", tmp_path / "dl")
    model_signing.verifying.Config().use_elliptic_key_verifier(public_key=public).verify(
        folder, folder / "model.sig"
    )
    assert verify(capsys, "--local", str(folder), "--public-key", str(public))[0] == 0

    # another key: not verified
    _, other = key_pair(tmp_path / "other", "other")
    code, out = verify(capsys, f"{gate.repo}@v1", "--public-key", str(other))
    assert code == 1 and "model.sig does not verify" in out

    # one changed byte, an added file, a deleted file: each named
    weights = sorted(p for p in folder.glob("*.safetensors"))[0]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    code, out = verify(capsys, "--local", str(folder), "--public-key", str(public))
    assert code == 1 and f"{weights.name}: changed since it was signed" in out
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    (folder / "extra.py").write_text("print('hello')\n")
    code, out = verify(capsys, "--local", str(folder), "--public-key", str(public))
    assert code == 1 and "extra.py: not covered by the signature" in out
    (folder / "extra.py").unlink()
    (folder / "tokenizer_config.json").unlink()
    code, out = verify(capsys, "--local", str(folder), "--public-key", str(public))
    assert code == 1 and "tokenizer_config.json: signed but missing" in out

    # tampering on the Hub itself: a commit that changes one file of main
    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    api.upload_file(path_or_fileobj=b'{"tampered": true}\n', path_in_repo="config.json", repo_id=gate.repo)
    code, out = verify(capsys, gate.repo, "--public-key", str(public))
    assert code == 1 and "config.json: changed since it was signed" in out
    assert verify(capsys, f"{gate.repo}@v1", "--public-key", str(public))[0] == 0  # the tag is intact


def test_unsigned_revision_fails_verify(gate, keys, hub_server, capsys):  # noqa: F811
    assert gate("plain", "4").code == 0
    code, out = verify(capsys, gate.repo, "--public-key", str(keys[1]))
    assert code == 1 and "model.sig: missing, so the files are unsigned" in out


def test_rollback_then_verify_names_the_restored_version(
    gate,  # noqa: F811
    keys,
    hub_server,
    registry_name,
    experiment_name,
    mlflow_server,
    tmp_path,
    capsys,
):
    private, public = keys
    signing = ["--signing-key", str(private)]  # a key alone turns signing on
    assert gate("v1", "1", extra=signing).code == 0
    second = gate("v2", "2", metrics=metrics_scaled(0.03), extra=[*signing, "--no-merge"])
    assert second.code == 0, second.err
    code, out = verify(capsys, gate.repo, "--public-key", str(public))
    assert code == 0 and f"{registry_name} v2 (replaced v1)" in out

    capsys.readouterr()
    rolled = main(
        [
            "rollback",
            "--registry-name",
            registry_name,
            "--experiment-name",
            experiment_name,
            "--mlflow-tracking-uri",
            mlflow_server.uri,
            "--hf-model-id",
            gate.repo,
            "--output-dir",
            str(tmp_path / "rb"),
        ]
    )
    assert rolled == 0, capsys.readouterr().err
    code, out = verify(capsys, gate.repo, "--public-key", str(public))
    assert code == 0, out
    assert (
        f"{registry_name} v1 (first model)" in out and "v2" not in out.partition("deploygate-verdict.json")[2]
    )
