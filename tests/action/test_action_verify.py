"""`mode: verify` as the runner runs it, against the local Hub server: the `verified` output, the
exit code, the summary; the signing key given as PEM text is masked; keyless signing without the
workflow's OIDC token is one annotation naming `id-token: write`, before anything is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from huggingface_hub import HfApi

from deploygate.adapters.hf_hub import HubPublisher
from deploygate.adapters.model_signer import KeySigner, sign_folder
from tests.action.harness import ActionHarness
from tests.hub_server import HubServer
from tests.keys import ec_pem

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]


def pem_pair() -> tuple[str, str]:
    private, public = ec_pem()
    return private.decode(), public.decode()


def signed_repo(hub_server: HubServer, tmp_path: Path, private: str) -> str:
    """A repo whose main holds a signed folder with a verdict, pushed with the real Hub adapter."""
    repo = hub_server.new_repo_id("verify")
    folder = tmp_path / "signed"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"\x00" * 4096)
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    verdict = {"kind": "deploygate/verdict", "format": 1, "registry": {"name": "qa", "version": "3"}}
    (folder / "deploygate-verdict.json").write_text(json.dumps(verdict))
    (folder / "model.sig").write_bytes(sign_folder(folder, KeySigner(private.encode())))
    HubPublisher(hub_server.token, hub_server.url).push(
        repo, folder, commit_message="signed", private=False, tag="v3"
    )
    return repo


def hub_env(hub_server: HubServer) -> dict[str, str]:
    return {"HF_ENDPOINT": hub_server.url, "HF_TOKEN": hub_server.token}


def test_verify_mode_sets_verified_and_fails_on_a_tampered_file(
    action: ActionHarness, hub_server: HubServer, tmp_path: Path
) -> None:
    private, public = pem_pair()
    repo = signed_repo(hub_server, tmp_path, private)
    inputs = {"mode": "verify", "hf-model-id": repo, "revision": "v3", "public-key": public}
    ok = action.run(inputs, env=hub_env(hub_server))
    assert ok.rc == 0, ok.stdout + ok.stderr
    assert ok.outputs["verified"] == "true" and ok.outputs["decision"] == "verify"
    assert ok.outputs["model-version"] == "3"
    assert "Verified" in ok.summary and "qa v3" in ok.summary
    assert ok.commands("notice")

    HfApi(endpoint=hub_server.url, token=hub_server.token).upload_file(
        path_or_fileobj=b'{"model_type": "gpt2"}\n', path_in_repo="config.json", repo_id=repo
    )
    bad = action.run({**inputs, "revision": ""}, env=hub_env(hub_server))  # main: the tampered commit
    assert bad.rc == 1
    assert bad.outputs["verified"] == "false"
    assert "config.json: changed since it was signed" in bad.summary
    assert any("config.json" in line for line in bad.commands("error"))
    assert action.versions() == []  # verify writes nothing to MLflow


def test_verify_mode_ignores_the_signing_settings_of_params_yaml(
    action: ActionHarness, hub_server: HubServer, tmp_path: Path
) -> None:
    # the deploy job's params.yaml asks for key signing; the verify step has only the public key
    private, public = pem_pair()
    repo = signed_repo(hub_server, tmp_path, private)
    params = tmp_path / "params.yaml"
    params.write_text("deployment:\n  signing: key\n")
    inputs = {"mode": "verify", "hf-model-id": repo, "public-key": public, "config": str(params)}
    run = action.run(inputs, env=hub_env(hub_server))
    assert run.rc == 0, run.stdout + run.stderr
    assert run.outputs["verified"] == "true"


def test_verify_mode_without_a_key_or_identity_is_exit_2(
    action: ActionHarness, hub_server: HubServer
) -> None:
    run = action.run({"mode": "verify", "hf-model-id": "acme/model"}, env=hub_env(hub_server))
    assert run.rc == 2
    assert any("input 'public-key'" in line for line in run.commands("error"))


def test_a_signing_key_given_as_text_is_masked(action: ActionHarness) -> None:
    private, _ = pem_pair()
    body = [line for line in private.splitlines() if line and not line.startswith("-----")]
    run = action.run({"signing-key": private})
    assert run.rc == 0, run.stdout + run.stderr
    masks = run.commands("add-mask")
    assert all(any(line in mask for mask in masks) for line in body)
    shown = "\n".join(
        line for line in (run.stdout + run.stderr).splitlines() if not line.startswith("::add-mask::")
    )
    assert not any(line in shown for line in body)
    assert not any(line in text for text in run.result_files().values() for line in body)


def test_keyless_signing_without_id_token_is_one_annotation(action: ActionHarness, tmp_path: Path) -> None:
    run = action.run({"signing": "sigstore", "hf-export-dir": str(tmp_path / "export")})
    assert run.rc == 2, run.stdout + run.stderr
    errors = run.commands("error")
    assert len(errors) == 1 and "id-token: write" in errors[0] and "ACTIONS_ID_TOKEN_REQUEST_URL" in errors[0]
    assert action.versions() == []  # refused before anything was registered
