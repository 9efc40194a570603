"""The streamed Hub push of a merged model: a base on the (local) Hub read by its headers and byte
ranges, each output shard merged, pre-uploaded as an LFS object and deleted, one commit at the end.
It must push the same bytes the folder path exports, keep one commit per version, stay within about
two shards of disk, and resume after a failure between shards without uploading the shards again."""

from __future__ import annotations

import json
import tempfile

import pytest
from huggingface_hub import HfApi
from mlflow import MlflowClient

from tests.diskuse import DiskSampler
from tests.gatekit import run_gate
from tests.hub_server import iter_repo_files
from tests.modelfactory import make_lora_adapter, make_tiny_llama, save_tiny_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")]

_LFS_PUT = r"^/__lfs/upload/"


@pytest.fixture
def world(tmp_path, mlflow_server, hub_server, monkeypatch):
    """A base model with 3 shards on the local Hub, a training run with its adapter in MLflow, and a
    work folder of its own as the temporary directory (where the deploy's disk is sampled)."""
    base = make_tiny_llama(tmp_path / "base", shards=3)
    base_repo = hub_server.new_repo_id("base")
    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    api.create_repo(base_repo)
    api.upload_folder(repo_id=base_repo, folder_path=str(base))
    adapter = make_lora_adapter(base, tmp_path / "art" / "peft", r=4, alpha=8)
    save_tiny_tokenizer(tmp_path / "tok")
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    run = client.create_run(client.create_experiment(f"training-{tmp_path.name}"))
    client.log_artifacts(run.info.run_id, str(adapter), "model/peft")
    client.log_artifacts(run.info.run_id, str(tmp_path / "tok"), "tokenizer")
    client.set_terminated(run.info.run_id)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(work))
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    shards = sorted(base.glob("*.safetensors"))
    return {
        "base": base,
        "base_repo": base_repo,
        "adapter": adapter,
        "work": work,
        "base_shards": [p.stat().st_size for p in shards],
        "location": {"mlflow_run_id": run.info.run_id, "tracking_uri": mlflow_server.uri, "fine_tuned": True},
    }


@pytest.fixture
def gate(tmp_path, capsys, mlflow_server, registry_name, experiment_name, monkeypatch, world):
    def _run(name: str, repo: str, *extra: str):
        monkeypatch.setenv("GITHUB_SHA", "1" * 40)
        return run_gate(
            tmp_path,
            capsys,
            uri=mlflow_server.uri,
            registry=registry_name,
            experiment=experiment_name,
            location=world["location"],
            name=name,
            hub=True,
            extra=["--hf-model-id", repo, "--base-model", world["base_repo"], *extra],
        )

    return _run


def _shard_limit(world) -> int:
    """A max-shard-size that cuts the merged model into about five shards."""
    return sum(world["base_shards"]) // 5


def _deploy_commits(hub_server, repo: str) -> list:
    return [c for c in hub_server.commits(repo) if c.title.startswith("deploygate:")]


def _side_bytes(world) -> int:
    """What a deploy keeps on disk besides shards, counted generously: the base's and the adapter's
    other files (twice: fetched, then in the folder pushed) and a file system block for every file."""
    folders = (world["base"], world["adapter"])
    files = [p for f in folders for p in f.rglob("*") if p.is_file() and p.suffix != ".safetensors"]
    adapter = sum(p.stat().st_size for p in world["adapter"].rglob("*.safetensors"))
    return 2 * sum(p.stat().st_size for p in files) + adapter + 64 * 4096


def test_streamed_push_equals_the_exported_folder_in_one_commit_within_two_shards_of_disk(
    gate, world, hub_server, tmp_path
):
    repo = hub_server.new_repo_id("stream")
    limit = _shard_limit(world)
    export = tmp_path / "export"
    # the folder path: the whole folder exported (no push), registering the version
    folder = gate(
        "folder", repo, "--skip-hf-push", "--hf-export-dir", str(export), "--max-shard-size", str(limit)
    )
    assert folder.code == 0, folder.err
    puts_before = len(hub_server.requests_matching("PUT", _LFS_PUT))
    with DiskSampler(world["work"]) as disk:
        streamed = gate("streamed", repo, "--force-deploy", "--max-shard-size", str(limit))
    assert streamed.code == 0, streamed.err
    assert streamed.info()["hub"]["tag"] == "v1"
    assert "weights fetched shard by shard" in streamed.err and "shard 1/" in streamed.err

    pushed = {p: data for p, data in iter_repo_files(hub_server, repo) if p != ".gitattributes"}
    exported = {p.relative_to(export).as_posix(): p.read_bytes() for p in export.rglob("*") if p.is_file()}
    assert pushed == exported  # bit for bit, every file
    shards = sorted(p for p in pushed if p.endswith(".safetensors"))
    assert len(shards) >= 4 and len(_deploy_commits(hub_server, repo)) == 1
    assert len(hub_server.requests_matching("PUT", _LFS_PUT)) - puts_before == len(shards)
    headers = {p: json.loads(pushed[p][8 : 8 + int.from_bytes(pushed[p][:8], "little")]) for p in shards}
    sizes = {
        p: sum(e["data_offsets"][1] - e["data_offsets"][0] for k, e in h.items() if k != "__metadata__")
        for p, h in headers.items()
    }
    largest_tensor = max(
        e["data_offsets"][1] - e["data_offsets"][0]
        for h in headers.values()
        for k, e in h.items()
        if k != "__metadata__"
    )
    assert all(size <= max(limit, largest_tensor) for size in sizes.values())  # max-shard-size holds
    index = json.loads(pushed["model.safetensors.index.json"])
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(sizes.values())
    assert json.loads(pushed["config.json"])["hidden_size"] == 64
    # the shards on disk at any time: at most two output shards and two base shards' bytes (a file
    # system block more per file), less than the base and the merged model the folder path holds
    shard_bound = 2 * max(len(pushed[p]) for p in shards) + 2 * max(world["base_shards"]) + 8 * 4096
    whole = sum(world["base_shards"]) + sum(len(pushed[p]) for p in shards)
    assert 0 < disk.weights_peak <= shard_bound < whole, (disk.weights_peak, shard_bound, whole)
    assert disk.peak <= shard_bound + _side_bytes(world), (disk.peak, shard_bound)


def test_a_push_that_fails_between_shards_resumes_with_one_commit_and_fewer_uploads(gate, world, hub_server):
    repo = hub_server.new_repo_id("resume")
    limit = _shard_limit(world)
    puts = len(hub_server.requests_matching("PUT", _LFS_PUT))
    hub_server.fail_next("PUT", _LFS_PUT, status=403, after=2)  # the third shard's upload is refused
    failed = gate("broken", repo, "--max-shard-size", str(limit))
    hub_server.clear_faults()
    assert failed.code == 1 and "Hub" in failed.err and "Traceback" not in failed.err, failed.err
    assert _deploy_commits(hub_server, repo) == []
    first = len(hub_server.requests_matching("PUT", _LFS_PUT)) - puts
    assert first == 3
    assert list(world["work"].iterdir()) == []  # nothing left behind

    again = gate("again", repo, "--max-shard-size", str(limit))
    assert again.code == 0, again.err
    shards = [p for p, _ in iter_repo_files(hub_server, repo) if p.endswith(".safetensors")]
    uploaded = len(hub_server.requests_matching("PUT", _LFS_PUT)) - puts - first
    assert len(shards) >= 4 and uploaded == len(shards) - 2  # the two pre-uploaded ones were kept
    assert len(_deploy_commits(hub_server, repo)) == 1
    assert again.info()["hub"]["tag"] == "v1"


def test_a_local_base_folder_streams_too(gate, world, hub_server):
    repo = hub_server.new_repo_id("local")
    res = gate(
        "local", repo, "--base-model", str(world["base"]), "--max-shard-size", str(_shard_limit(world))
    )
    assert res.code == 0, res.err
    assert "shard 1/" in res.err  # the per-shard line only the streamed push writes
    files = dict(iter_repo_files(hub_server, repo))
    assert len([p for p in files if p.endswith(".safetensors")]) >= 4
    assert len(_deploy_commits(hub_server, repo)) == 1


def test_a_deploy_this_machine_cannot_hold_is_refused_before_anything_is_written(
    gate, world, hub_server, mlflow_server, registry_name, tmp_path_factory
):
    import struct

    huge = tmp_path_factory.mktemp("huge")
    (huge / "config.json").write_text(json.dumps({"model_type": "llama"}))
    nbytes = 4 * 10**12  # 4 TB of weights, declared by a sparse file that takes no disk
    header = json.dumps(
        {"w": {"dtype": "BF16", "shape": [nbytes // 2], "data_offsets": [0, nbytes]}}
    ).encode()
    header += b" " * (-len(header) % 8)
    with (huge / "model.safetensors").open("wb") as handle:
        handle.write(struct.pack("<Q", len(header)) + header)
        handle.truncate(8 + len(header) + nbytes)
    repo = hub_server.new_repo_id("huge")
    res = gate("huge", repo, "--base-model", str(huge))
    assert res.code == 1, res.err
    assert (
        "disk: a deploy of this 4.0 TB model streamed shard by shard" in res.err
        and "Traceback" not in res.err
    )
    assert "free disk space, point TMPDIR at a larger disk, or set max-shard-size lower" in res.err
    assert repo not in hub_server.repos  # nothing pushed, no repo created
    assert MlflowClient(tracking_uri=mlflow_server.uri).search_model_versions(f"name='{registry_name}'") == []


def test_an_adapter_only_peft_can_merge_fetches_the_whole_base_and_still_pushes_one_commit(
    gate, world, hub_server, mlflow_server, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    from deploygate.adapters.lora_merge import merge_with_peft

    dora = make_lora_adapter(world["base"], tmp_path / "dora" / "peft", r=4, alpha=8, use_dora=True)
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    run = client.create_run(client.create_experiment(f"dora-{tmp_path.name}"))
    client.log_artifacts(run.info.run_id, str(dora), "model/peft")
    client.set_terminated(run.info.run_id)
    world["location"] = {
        "mlflow_run_id": run.info.run_id,
        "tracking_uri": mlflow_server.uri,
        "fine_tuned": True,
    }
    repo = hub_server.new_repo_id("dora")
    res = gate("dora", repo)
    assert res.code == 0, res.err
    assert "falling back to peft" in res.err and len(_deploy_commits(hub_server, repo)) == 1
    pushed = dict(iter_repo_files(hub_server, repo))
    merge_with_peft(world["base"], dora, tmp_path / "peft")
    expected = {p.name for p in (tmp_path / "peft").glob("*.safetensors")}
    assert {p for p in pushed if p.endswith(".safetensors")} == set(expected)
    for (
        name
    ) in expected:  # the tensors peft's own merge writes (save_pretrained's bytes may differ in metadata)
        (tmp_path / "got.safetensors").write_bytes(pushed[name])
        got, want = load_file(tmp_path / "got.safetensors"), load_file(tmp_path / "peft" / name)
        assert got.keys() == want.keys() and all(got[k].equal(want[k]) for k in want)


def test_a_deploy_killed_between_shards_resumes_on_the_rerun_with_one_commit(
    world, hub_server, mlflow_server, registry_name, experiment_name, tmp_path, monkeypatch
):
    """A real kill: the deploy runs as its own process, SIGKILLed once two shards are on the Hub."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.gatekit import SEED_METRICS

    repo = hub_server.new_repo_id("killed")
    (tmp_path / "metrics.json").write_text(json.dumps(SEED_METRICS))
    (tmp_path / "location.json").write_text(json.dumps(world["location"]))
    argv = [sys.executable, "-m", "deploygate", "--evaluation-results", str(tmp_path / "metrics.json")]
    argv += ["--model-artifact-path", str(tmp_path / "location.json"), "--output-dir", str(tmp_path / "out")]
    argv += ["--mlflow-tracking-uri", mlflow_server.uri, "--registry-name", registry_name]
    argv += ["--experiment-name", experiment_name, "--hf-model-id", repo, "--base-model", world["base_repo"]]
    argv += ["--max-shard-size", str(_shard_limit(world))]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    env |= {"HF_HUB_DISABLE_XET": "1", "TMPDIR": str(world["work"]), "GITHUB_SHA": "1" * 40}
    puts = len(hub_server.requests_matching("PUT", _LFS_PUT))
    # the commit is held back, so that a deploy faster than this loop is still running when it is killed
    hub_server.hang_next("POST", r"/api/models/.+/commit/", seconds=30)
    child = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while len(hub_server.requests_matching("PUT", _LFS_PUT)) - puts < 2 and time.monotonic() < deadline:
        assert child.poll() is None, child.stderr.read().decode() if child.stderr else ""
        time.sleep(0.005)
    child.send_signal(signal.SIGKILL)
    child.wait()
    hub_server.clear_faults()
    first = len(hub_server.requests_matching("PUT", _LFS_PUT)) - puts
    assert first >= 2 and _deploy_commits(hub_server, repo) == []

    rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    shards = [p for p, _ in iter_repo_files(hub_server, repo) if p.endswith(".safetensors")]
    uploaded = len(hub_server.requests_matching("PUT", _LFS_PUT)) - puts - first
    assert len(shards) >= 4 and uploaded == len(shards) - first  # what was on the Hub is not sent again
    assert len(_deploy_commits(hub_server, repo)) == 1


def test_a_signed_streamed_push_verifies_and_its_signature_covers_the_shards_uploaded_ahead(
    gate, world, hub_server, tmp_path, capsys
):
    from deploygate.shells.cli import main
    from tests.keys import key_pair

    private, public = key_pair(tmp_path / "keys")
    repo = hub_server.new_repo_id("signed-stream")
    res = gate(
        "signed", repo, "--max-shard-size", str(_shard_limit(world)), "--signing", "key",
        "--signing-key", str(private),
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "weights fetched shard by shard" in res.err
    pushed = dict(iter_repo_files(hub_server, repo))
    shards = sorted(p for p in pushed if p.endswith(".safetensors"))
    assert len(shards) >= 4 and {"model.sig", "deploygate-verdict.json"} <= set(pushed)
    assert len(_deploy_commits(hub_server, repo)) == 1
    record = json.loads(pushed["deploygate.json"])
    assert set(shards) <= set(json.dumps(record).split('"'))  # the shards uploaded ahead are in the record
    capsys.readouterr()
    assert main(["verify", f"{repo}@v1", "--public-key", str(public)]) == 0, capsys.readouterr()
    # a shard uploaded ahead is covered like any file: one changed byte in it fails, naming it
    local = tmp_path / "downloaded"
    HfApi(endpoint=hub_server.url, token=hub_server.token).snapshot_download(
        repo, revision="v1", local_dir=local, cache_dir=tmp_path / "cache"
    )
    shard = local / shards[1]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["verify", "--local", str(local), "--public-key", str(public)]) == 1
    assert shards[1] in capsys.readouterr().out
