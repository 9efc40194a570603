"""The Hub adapter against the real `huggingface_hub` client and the local Hub-compatible server.

Every test uses a fresh repo. Faults are injected on the server, never by patching the SDK.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from huggingface_hub import HfApi, ModelCard

from deploygate.adapters.hf_card import render_card
from deploygate.adapters.hf_hub import HubPublisher
from deploygate.core.errors import ConfigError, HubError
from deploygate.core.render.card import AdapterFacts, CardDecision, CardInputs
from tests.hub_server import HubServer, iter_repo_files

# huggingface_hub's LFS PUT passes `data=<file>` to httpx2, which deprecates it in favour of `content=`:
# a third-party deprecation we cannot fix (pyproject runs pytest with filterwarnings=error).
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")

WEIGHTS_BYTES = 4 * 1024 * 1024  # a .safetensors file always takes the LFS path, whatever its size


@pytest.fixture
def repo_id(hub_server: HubServer) -> Iterator[str]:
    """A repo no other test uses; faults the test left unused are cleared afterwards."""
    yield hub_server.new_repo_id()
    hub_server.clear_faults()


class Sleeps(list[float]):
    """Records backoff delays instead of sleeping."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def publisher(hub: HubServer, token: str | None = None, *, retries: int = 2) -> tuple[HubPublisher, Sleeps]:
    sleeps = Sleeps()
    tok = hub.token if token is None else token
    return HubPublisher(tok or None, hub.url, retries=retries, backoff=0.01, sleep=sleeps), sleeps


def card_text(repo_id: str, score: float = 0.42) -> str:
    return render_card(
        CardInputs(
            repo_id=repo_id,
            base_model="acme/base-0.5b",
            registry_name="qa-model",
            registry_version="1",
            weighted_score=score,
            metrics={"bleu1": 0.5, "bleu4": 0.2, "rougeL_precision": 0.6},
            weights={"bleu1": 0.2, "bleu4": 0.3, "rougeL_precision": 0.5},
            decision=CardDecision("deploy", "first model"),
            adapter=AdapterFacts(8, 16, ("q_proj", "v_proj")),
            created_at="2026-01-01T00:00:00Z",
            license="apache-2.0",
            language=("en",),
            tags=("qa",),
        )
    )


def model_folder(
    root: Path, repo_id: str, *, seed: int, extra: dict[str, str] | None = None, score: float = 0.42
) -> Path:
    root.mkdir(parents=True)
    (root / "model.safetensors").write_bytes(random.Random(seed).randbytes(WEIGHTS_BYTES))
    (root / "config.json").write_text(f'{{"seed": {seed}}}\n')
    (root / "tokenizer" / "tokenizer.json").parent.mkdir()
    (root / "tokenizer" / "tokenizer.json").write_text('{"version": "1.0"}\n')
    (root / "README.md").write_text(card_text(repo_id, score))
    for name, content in (extra or {}).items():
        (root / name).write_text(content)
    return root


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_push_creates_repo_uploads_lfs_and_tags(hub_server: HubServer, repo_id: str, tmp_path: Path) -> None:
    folder = model_folder(tmp_path / "v1", repo_id, seed=1)
    hub, sleeps = publisher(hub_server)
    before = hub_server.lfs_bytes_received

    pushed = hub.push(repo_id, folder, commit_message="Deploy version 1", private=True, tag="v1")

    assert hub_server.lfs_bytes_received - before == WEIGHTS_BYTES
    assert pushed.repo_id == repo_id and pushed.tag == "v1"
    assert pushed.url == f"{hub_server.url}/{repo_id}/commit/{pushed.sha}"
    assert hub.head(repo_id) == pushed.sha
    assert hub.find_tag(repo_id, "v1") == pushed
    assert hub.find_tag(repo_id, "v2") is None
    assert sleeps == []

    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    assert sorted(api.list_repo_files(repo_id)) == sorted([".gitattributes", *files_of(folder)])
    assert [c.title for c in api.list_repo_commits(repo_id)] == ["Deploy version 1", "initial commit"]
    info = api.model_info(repo_id)
    assert info.private is True and info.sha == pushed.sha
    assert info.card_data is not None and info.card_data.base_model == "acme/base-0.5b"
    assert info.card_data.pipeline_tag == "text-generation"

    readme = api.hf_hub_download(repo_id, "README.md", revision="v1", cache_dir=tmp_path / "cache")
    card = ModelCard.load(readme)
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results == {"BLEU-1": 0.5, "BLEU-4": 0.2, "ROUGE-L precision": 0.6, "Weighted score": 0.42}
    weights = api.hf_hub_download(
        repo_id, "model.safetensors", revision=pushed.sha, cache_dir=tmp_path / "cache"
    )
    assert Path(weights).read_bytes() == (folder / "model.safetensors").read_bytes()

    # nobody else can see a private repo
    anonymous, _ = publisher(hub_server, token="")
    assert anonymous.head(repo_id) is None


def test_identical_push_uploads_nothing_and_reuses_the_commit(
    hub_server: HubServer, repo_id: str, tmp_path: Path
) -> None:
    folder = model_folder(tmp_path / "v1", repo_id, seed=2)
    hub, _ = publisher(hub_server)
    first = hub.push(repo_id, folder, commit_message="Deploy version 1", private=False, tag="v1")
    before_bytes, before_commits = hub_server.lfs_bytes_received, len(hub_server.commits(repo_id))

    # a re-run of the same version sees the tag and pushes nothing at all
    again = hub.push(repo_id, folder, commit_message="Deploy version 1", private=False, tag="v1")
    assert again == first
    # a new tag for the same files: no bytes, no commit, the tag lands on the same commit
    same = hub.push(repo_id, folder, commit_message="Deploy version 2", private=False, tag="v2")
    assert same.sha == first.sha and same.tag == "v2"

    assert hub_server.lfs_bytes_received == before_bytes
    assert len(hub_server.commits(repo_id)) == before_commits


def test_changed_push_is_one_commit_that_drops_stale_files(
    hub_server: HubServer, repo_id: str, tmp_path: Path
) -> None:
    hub, _ = publisher(hub_server)
    v1 = model_folder(tmp_path / "v1", repo_id, seed=3, extra={"old_notes.txt": "stale\n"})
    hub.push(repo_id, v1, commit_message="Deploy version 1", private=False, tag="v1")
    before_bytes, before_commits = hub_server.lfs_bytes_received, len(hub_server.commits(repo_id))

    v2 = model_folder(tmp_path / "v2", repo_id, seed=3, score=0.5)  # same weights, new card, no notes
    pushed = hub.push(repo_id, v2, commit_message="Deploy version 2", private=False, tag="v2")

    assert hub_server.lfs_bytes_received == before_bytes  # the weights did not change
    assert len(hub_server.commits(repo_id)) == before_commits + 1
    assert dict(iter_repo_files(hub_server, repo_id)) == {".gitattributes": ANY_BYTES, **files_of(v2)}
    assert hub.find_tag(repo_id, "v2") == pushed


class _AnyBytes(bytes):
    def __eq__(self, other: object) -> bool:
        return isinstance(other, bytes)

    __hash__ = bytes.__hash__


ANY_BYTES = _AnyBytes()


def test_commit_500_is_retried_then_fails_without_a_commit(
    hub_server: HubServer, repo_id: str, tmp_path: Path
) -> None:
    hub, sleeps = publisher(hub_server, retries=2)
    hub.push(repo_id, model_folder(tmp_path / "v1", repo_id, seed=4), commit_message="v1", private=False)
    commits_before = len(hub_server.commits(repo_id))
    commit_path = rf"^/api/models/{repo_id}/commit/main$"
    posts_before = len(hub_server.requests_matching("POST", commit_path))
    hub_server.fail_next("POST", commit_path, status=500, times=10)

    with pytest.raises(HubError) as caught:
        hub.push(
            repo_id,
            model_folder(tmp_path / "v2", repo_id, seed=5),
            commit_message="v2",
            private=False,
            tag="v2",
        )

    message = str(caught.value)
    assert "500" in message and "after 3 attempts" in message and "\n" not in message
    assert len(hub_server.requests_matching("POST", commit_path)) - posts_before == 3
    assert sleeps == [0.01, 0.02]
    assert len(hub_server.commits(repo_id)) == commits_before
    assert hub.find_tag(repo_id, "v2") is None


def test_transient_failures_are_retried_until_the_push_succeeds(
    hub_server: HubServer, repo_id: str, tmp_path: Path
) -> None:
    hub, sleeps = publisher(hub_server, retries=3)
    commit_path = rf"^/api/models/{repo_id}/commit/main$"
    hub_server.fail_next("POST", rf"^/api/models/{repo_id}/tag/", status=503)
    hub_server.drop_next("POST", commit_path)
    hub_server.fail_next("POST", commit_path, status=429)

    pushed = hub.push(
        repo_id, model_folder(tmp_path / "v1", repo_id, seed=6), commit_message="v1", private=False, tag="v1"
    )

    assert len(sleeps) == 3
    assert hub.find_tag(repo_id, "v1") == pushed
    assert [c.title for c in hub_server.commits(repo_id)] == ["v1", "initial commit"]


def test_invalid_token_is_not_retried(hub_server: HubServer, repo_id: str, tmp_path: Path) -> None:
    hub, sleeps = publisher(hub_server, token="hf_not_a_real_token")
    folder = model_folder(tmp_path / "v1", repo_id, seed=7)
    seen = len(hub_server.requests)

    with pytest.raises(HubError, match="HF_TOKEN is invalid or expired") as caught:
        hub.push(repo_id, folder, commit_message="v1", private=False, tag="v1")
    assert "/settings/tokens" in str(caught.value)
    with pytest.raises(HubError, match="HF_TOKEN is invalid or expired"):
        hub.whoami()

    assert sleeps == []
    assert len(hub_server.requests) - seen == 2  # one refused request per call, none retried
    assert repo_id not in hub_server.repos


def test_read_only_token_gets_a_clear_403_and_no_commit(
    hub_server: HubServer, repo_id: str, tmp_path: Path
) -> None:
    writer, _ = publisher(hub_server)
    writer.push(repo_id, model_folder(tmp_path / "v1", repo_id, seed=8), commit_message="v1", private=False)
    commits_before = len(hub_server.commits(repo_id))
    reader, sleeps = publisher(hub_server, token=hub_server.readonly_token)

    with pytest.raises(HubError, match=f"lacks write access to {repo_id}"):
        reader.push(
            repo_id, model_folder(tmp_path / "v2", repo_id, seed=9), commit_message="v2", private=False
        )
    with pytest.raises(HubError, match="lacks write access"):
        reader.check_repo_access(repo_id)

    assert sleeps == []
    assert len(hub_server.commits(repo_id)) == commits_before
    assert [r.status for r in hub_server.requests if r.status == 403 and repo_id in r.path]


def test_check_repo_access_and_whoami(hub_server: HubServer, repo_id: str, tmp_path: Path) -> None:
    hub, _ = publisher(hub_server)
    assert hub.whoami() == hub_server.user
    assert "does not exist yet" in hub.check_repo_access(repo_id)
    hub.push(repo_id, model_folder(tmp_path / "v1", repo_id, seed=10), commit_message="v1", private=True)
    assert (
        hub.check_repo_access(repo_id) == f"Hub repo {repo_id} exists and {hub_server.user} can write to it"
    )
    with pytest.raises(HubError, match="cannot create repos under 'someone-else'"):
        hub.check_repo_access("someone-else/model")
    with pytest.raises(HubError, match="No Hugging Face token"):
        publisher(hub_server, token="")[0].whoami()


def test_existing_tag_on_other_files_is_never_moved(
    hub_server: HubServer, repo_id: str, tmp_path: Path
) -> None:
    hub, _ = publisher(hub_server)
    first = hub.push(
        repo_id, model_folder(tmp_path / "a", repo_id, seed=11), commit_message="v1", private=False, tag="v1"
    )
    commits_before = len(hub_server.commits(repo_id))

    with pytest.raises(HubError, match=r"tag v1 already exists .* never moved"):
        hub.push(
            repo_id,
            model_folder(tmp_path / "b", repo_id, seed=12),
            commit_message="v1 again",
            private=False,
            tag="v1",
        )

    assert len(hub_server.commits(repo_id)) == commits_before
    assert hub.find_tag(repo_id, "v1") == first


def test_restore_tag_brings_back_the_tagged_files_in_a_new_commit(
    hub_server: HubServer, repo_id: str, tmp_path: Path
) -> None:
    hub, _ = publisher(hub_server)
    v1 = model_folder(tmp_path / "v1", repo_id, seed=13, extra={"only_in_v1.txt": "v1\n"})
    first = hub.push(repo_id, v1, commit_message="Deploy version 1", private=False, tag="v1")
    v2 = model_folder(tmp_path / "v2", repo_id, seed=14, extra={"only_in_v2.txt": "v2\n"})
    second = hub.push(repo_id, v2, commit_message="Deploy version 2", private=False, tag="v2")
    before_bytes = hub_server.lfs_bytes_received

    restored = hub.restore_tag(repo_id, "v1", commit_message="Roll back to version 1")

    assert restored.sha not in (first.sha, second.sha)
    assert hub.head(repo_id) == restored.sha
    assert dict(iter_repo_files(hub_server, repo_id)) == dict(iter_repo_files(hub_server, repo_id, "v1"))
    assert [c.title for c in hub_server.commits(repo_id)][:3] == [
        "Roll back to version 1",
        "Deploy version 2",
        "Deploy version 1",
    ]
    assert hub_server.lfs_bytes_received == before_bytes  # the v1 weights are still on the Hub
    assert hub.find_tag(repo_id, "v2") == second  # tags are history: untouched
    with pytest.raises(HubError, match="tag v9 not found"):
        hub.restore_tag(repo_id, "v9", commit_message="nope")


@pytest.mark.parametrize(
    "bad",
    [
        "no-owner",
        "a/b/c",
        "owner/na--me",
        "owner/../x",
        "-owner/name",
        "owner/name.git",
        "owner/" + "n" * 100,
        "owner/na me",
        "",
    ],
)
def test_bad_repo_ids_fail_before_any_request(hub_server: HubServer, tmp_path: Path, bad: str) -> None:
    hub, _ = publisher(hub_server)
    seen = len(hub_server.requests)
    with pytest.raises(ConfigError, match=repr(bad).replace("\\", "\\\\").replace(".", r"\.")[:20]):
        hub.push(bad, tmp_path, commit_message="x", private=False)
    with pytest.raises(ConfigError):
        hub.head(bad)
    assert len(hub_server.requests) == seen


def test_missing_repo_reads_as_none_and_bad_tag_is_config_error(hub_server: HubServer, repo_id: str) -> None:
    hub, _ = publisher(hub_server)
    assert hub.head(repo_id) is None
    assert hub.find_tag(repo_id, "v1") is None
    with pytest.raises(ConfigError, match="not a valid tag"):
        hub.find_tag(repo_id, "bad tag")


def test_unreachable_endpoint_is_retried_then_reported(tmp_path: Path) -> None:
    sleeps = Sleeps()
    hub = HubPublisher("hf_x", "http://127.0.0.1:9", retries=1, backoff=0.01, sleep=sleeps)
    with pytest.raises(HubError, match=r"cannot reach http://127\.0\.0\.1:9 after 2 attempts"):
        hub.whoami()
    assert sleeps == [0.01]


def test_server_speaks_the_hub_error_protocol(hub_server: HubServer, repo_id: str, tmp_path: Path) -> None:
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(repo_id)
    api.create_repo(repo_id)
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(repo_id)
    assert conflict.value.response.status_code == 409
    assert conflict.value.response.json()["url"] == f"{hub_server.url}/{repo_id}"
    with pytest.raises(EntryNotFoundError):
        api.hf_hub_download(repo_id, "missing.bin", cache_dir=tmp_path)
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files(repo_id, revision="no-such-branch")
    api.delete_repo(repo_id)
    with pytest.raises(RepositoryNotFoundError):
        api.delete_repo(repo_id)


def test_hanging_request_is_dropped_and_retried(hub_server: HubServer) -> None:
    hub, sleeps = publisher(hub_server)
    hub_server.hang_next("GET", r"^/api/whoami-v2$", seconds=0.2)
    assert hub.whoami() == hub_server.user
    assert len(sleeps) == 1
    hub_server.clear_faults()


# --- the streamed push: staged shards, one commit, the manifest; a base read by byte ranges ----------------


def test_staged_files_go_in_the_one_commit_with_a_manifest_of_every_file(
    hub_server: HubServer, repo_id: str, tmp_path: Path
) -> None:
    import hashlib

    hub, _ = publisher(hub_server)
    folder = model_folder(tmp_path / "m", repo_id, seed=7)
    shard = tmp_path / "model-00002-of-00002.safetensors"
    shard.write_bytes(random.Random(8).randbytes(WEIGHTS_BYTES))
    data = shard.read_bytes()
    puts = len(hub_server.requests_matching("PUT", r"^/__lfs/upload/"))
    staged = hub.stage(repo_id, shard.name, shard, private=False)
    assert staged.uploaded and staged.digest.sha256 == hashlib.sha256(data).hexdigest()
    shard.unlink()  # uploaded ahead: the commit needs only its digest
    commits = len(hub_server.commits(repo_id))
    commit = hub.push(
        repo_id,
        folder,
        commit_message="deploygate: qa-model v1, x",
        private=False,
        tag="v1",
        staged=[shard.name],
    )
    assert len(hub_server.commits(repo_id)) == commits + 1
    files = dict(iter_repo_files(hub_server, repo_id))
    assert files[shard.name] == data and "model.safetensors" in files
    assert set(commit.manifest) == set(files) - {".gitattributes"}
    for path, digest in commit.manifest.items():
        assert (digest.sha256, digest.size) == (hashlib.sha256(files[path]).hexdigest(), len(files[path]))
    # the same bytes staged again (a re-run): the LFS batch answer has no upload action for them
    again = tmp_path / "again.safetensors"
    again.write_bytes(data)
    hub.stage(repo_id, shard.name, again, private=False)
    assert (
        len(hub_server.requests_matching("PUT", r"^/__lfs/upload/")) - puts == 2
    )  # model.safetensors + shard


def test_a_base_is_laid_out_sparse_and_filled_by_byte_ranges(
    hub_server: HubServer, repo_id: str, tmp_path: Path
) -> None:
    import json
    import struct

    from deploygate.core.shard_plan import ByteRange

    header = json.dumps({"w": {"dtype": "U8", "shape": [3_000_000], "data_offsets": [0, 3_000_000]}}).encode()
    header += b" " * (-len(header) % 8)
    body = random.Random(3).randbytes(3_000_000)
    source = tmp_path / "src"
    source.mkdir()
    (source / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + body)
    (source / "config.json").write_text("{}\n")
    (source / "pytorch_model.bin").write_bytes(b"never downloaded")
    api = HfApi(endpoint=hub_server.url, token=hub_server.token)
    api.create_repo(repo_id)
    api.upload_folder(repo_id=repo_id, folder_path=str(source))
    hub, _ = publisher(hub_server)
    ranges = len(hub_server.requests_matching("GET", r"/resolve/.*model\.safetensors"))
    assert hub.safetensors_sizes(repo_id) == ({"model.safetensors": 8 + len(header) + len(body)}, 3_000_000)
    base = tmp_path / "base"
    revision = hub.base_skeleton(repo_id, base)
    assert revision == hub.head(repo_id)
    # the estimate and the skeleton read the header once between them (two range requests)
    assert len(hub_server.requests_matching("GET", r"/resolve/.*model\.safetensors")) - ranges == 2
    weights = base / "model.safetensors"
    assert (base / "config.json").is_file() and not (base / "pytorch_model.bin").exists()
    assert weights.stat().st_size == (source / "model.safetensors").stat().st_size
    assert weights.stat().st_blocks * 512 < 1_000_000  # a hole where the data will be
    start = 8 + len(header)
    assert (
        hub.fetch_ranges(repo_id, revision, base, [ByteRange(weights.name, start + 1000, start + 2_000_000)])
        == 1_999_000
    )
    assert weights.read_bytes()[start + 1000 : start + 2_000_000] == body[1000:2_000_000]
    assert weights.stat().st_blocks * 512 >= 1_999_000
    # one tensor's bytes given back as soon as they are read: a hole, the bytes around it untouched
    allocated = weights.stat().st_blocks * 512
    punched = hub.punch(base, ByteRange(weights.name, start + 1000, start + 1_000_000))
    assert punched or not sys.platform.startswith("linux")  # ext4, xfs, btrfs, tmpfs, overlayfs all can
    if punched:
        data = weights.read_bytes()
        assert data[start + 1000 : start + 1_000_000] == bytes(999_000)
        assert data[start + 1_000_000 : start + 2_000_000] == body[1_000_000:2_000_000]
        assert data[:start] == (source / "model.safetensors").read_bytes()[:start]
        assert allocated - weights.stat().st_blocks * 512 >= 990_000
        assert weights.stat().st_size == (source / "model.safetensors").stat().st_size
    else:  # a file system without hole punching: nothing changed
        assert weights.read_bytes()[start + 1000 : start + 2_000_000] == body[1000:2_000_000]
    hub.drop_ranges(base, [ByteRange(weights.name, start + 1000, start + 2_000_000)])
    assert (
        weights.stat().st_blocks * 512 < 1_000_000
        and weights.read_bytes()[:start] == (source / "model.safetensors").read_bytes()[:start]
    )


def test_a_server_keeping_lfs_objects_as_files_takes_uploads_and_serves_ranges(tmp_path: Path) -> None:
    """The file-backed server bench/scale.py serves a 7B model from: an upload is spooled to a file
    and checked against the oid the batch announced; a range is sent from the object's file."""
    import hashlib
    import json
    import struct

    from huggingface_hub import get_session

    from deploygate.core.shard_plan import ByteRange

    header = json.dumps({"w": {"dtype": "U8", "shape": [5_000_000], "data_offsets": [0, 5_000_000]}}).encode()
    header += b" " * (-len(header) % 8)
    data = struct.pack("<Q", len(header)) + header + random.Random(5).randbytes(5_000_000)
    with HubServer(lfs_dir=tmp_path / "lfs") as server:
        repo_id = server.new_repo_id()
        hub, _ = publisher(server)
        shard = tmp_path / "model.safetensors"
        shard.write_bytes(data)
        assert hub.stage(repo_id, shard.name, shard, private=False).uploaded
        oid = hashlib.sha256(data).hexdigest()
        stored = tmp_path / "lfs" / repo_id.replace("/", "--") / oid
        assert stored.read_bytes() == data
        commit = hub.push(repo_id, model_folder(tmp_path / "m", repo_id, seed=2), commit_message="v1",
                          private=False, staged=[shard.name])  # fmt: skip
        base = tmp_path / "base"
        assert hub.base_skeleton(repo_id, base) == commit.sha
        start = 8 + len(header)
        hub.fetch_ranges(repo_id, commit.sha, base, [ByteRange(shard.name, start + 7, start + 4_000_000)])
        assert (base / shard.name).read_bytes()[start + 7 : start + 4_000_000] == data[
            start + 7 : start + 4_000_000
        ]

        # bytes that are not the announced object are refused, and nothing of them is kept
        batch = (
            get_session()
            .post(
                f"{server.url}/{repo_id}.git/info/lfs/objects/batch",
                headers={"Authorization": f"Bearer {server.token}"},
                json={"operation": "upload", "objects": [{"oid": "a" * 64, "size": 10}]},
            )
            .json()
        )
        put = get_session().put(batch["objects"][0]["actions"]["upload"]["href"], content=b"0123456789")
        assert put.status_code == 400 and "does not match oid" in put.text
        assert sorted(p.name for p in (tmp_path / "lfs").rglob("*") if p.is_file()) == [oid]
