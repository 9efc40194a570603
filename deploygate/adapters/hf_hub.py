"""The Hugging Face Hub adapter: push a built model folder as one commit, tag it, find and restore tags.

The only module that imports `huggingface_hub`, and only inside functions, so `import deploygate.adapters.hf_hub`
stays cheap. Every SDK / transport error leaves this module as a `deploygate.core.errors.HubError` with a
one-line message and a fix; transient failures (connection errors, 408/429/5xx) are retried with a
bounded exponential backoff, 401/403/404 never are. It must not read the environment (the shells pass
token and endpoint), decide anything about deployment, or build the folder it pushes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import struct
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar, cast

from deploygate.core.errors import ConfigError, HubError, first_line
from deploygate.core.hub_names import validate_repo_id, validate_tag
from deploygate.core.model import (
    FileDigest,
    StagedFile,
)
from deploygate.core.model import (
    HubPush as HubCommit,  # a commit on the Hub: url = {endpoint}/{repo}/commit/{sha}
)
from deploygate.core.provenance import RECORD_FILE, VersionIdentity, mismatch, parse_record
from deploygate.core.redact import remember
from deploygate.core.shard_plan import ByteRange

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, HfApi

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
MAIN = "main"
_MAX_DELAY = 30.0
# never uploaded: VCS metadata and the download cache `snapshot_download(local_dir=...)` leaves behind
_SKIPPED_DIRS = (".git", ".cache/huggingface")
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})
# main moved between reading its head and committing (412): re-read and commit again, this many times
_PARENT_RACES = 5
_timeout_installed: float | None = None
# a base model's weights: never downloaded by `base_skeleton` (safetensors are laid out sparse instead)
_WEIGHT_SUFFIXES = (
    ".safetensors",
    ".bin",
    ".pt",
    ".pth",
    ".ckpt",
    ".h5",
    ".msgpack",
    ".gguf",
    ".onnx",
    ".ot",
)
_RANGE_CHUNK = 8 * 1024 * 1024

T = TypeVar("T")


class HubHTTPError(HubError):
    """A HubError that came from an HTTP answer; `status` lets callers tell 404 / 409 apart."""

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message, hint=hint)
        self.status = status


class HubPublisher:
    """Pushes folders to Hub model repos and reads back what is there.

    `retries` is how many times a transient failure is retried (so `retries + 1` attempts at most);
    the n-th retry waits `backoff * 2**(n-1)` seconds (capped at 30 s). `sleep` is injectable for tests.
    Note that `huggingface_hub` itself also retries some uploads (preupload, LFS PUT) internally.
    `timeout` bounds every request (connect 10 s at most): `huggingface_hub` sets none, so a server
    that accepts a connection and never answers would hang the gate for ever.
    """

    def __init__(
        self,
        token: str | None,
        endpoint: str | None = None,
        *,
        retries: int = 3,
        backoff: float = 1.0,
        progress_bars: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        timeout: float = 120.0,
    ) -> None:
        if retries < 0 or backoff < 0:
            raise ConfigError(f"Hub retries/backoff must be >= 0, got retries={retries}, backoff={backoff}.")
        self.token = token or None
        remember(self.token)
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._sleep = sleep
        self._progress_bars = progress_bars
        self._api_instance: HfApi | None = None
        self.timeout = timeout
        self._staged: dict[tuple[str, str], Any] = {}  # (repo, path) -> its pre-uploaded CommitOperationAdd
        # a base's file list and safetensors headers, read once per run: the preflight's estimate and the
        # streamed build's skeleton need the same ones (the build uses the commit the estimate read)
        self._base_files: dict[str, tuple[str, dict[str, int | None]]] = {}
        self._headers: dict[tuple[str, str, str], bytes] = {}
        self._created: set[str] = set()

    # --- reads -----------------------------------------------------------------------------------

    def whoami(self) -> str:
        """The user name the token belongs to."""
        return str(self._whoami()["name"])

    def check_repo_access(self, repo_id: str) -> str:
        """One line on whether `repo_id` exists and this token can write to it; HubError when it cannot."""
        validate_repo_id(repo_id)
        info = self._whoami()
        user = str(info["name"])
        namespaces = {user, *(str(o.get("name")) for o in info.get("orgs") or [])}
        role = str(((info.get("auth") or {}).get("accessToken") or {}).get("role") or "unknown")
        api = self._api()
        try:
            self._call("check write access to", repo_id, lambda: api.auth_check(repo_id, write=True))
        except HubError as exc:
            if _status(exc) != 404:
                raise
        else:
            return f"Hub repo {repo_id} exists and {user} can write to it"
        namespace = repo_id.split("/")[0]
        if role == "read":
            raise HubError(
                f"Hub repo {repo_id} does not exist and the token of {user} is read-only.",
                hint=f"Fix: create a token with the 'write' role at {self._tokens_url()} and set HF_TOKEN.",
            )
        if namespace not in namespaces:
            raise HubError(
                f"Hub repo {repo_id} does not exist (or is not visible) and {user} cannot create repos "
                f"under '{namespace}'.",
                hint=f"Fix: use one of your namespaces ({', '.join(sorted(namespaces))}) or create the "
                f"repo on the Hub first.",
            )
        return f"Hub repo {repo_id} does not exist yet; it will be created on the first push (as {user})"

    def head(self, repo_id: str) -> str | None:
        """The commit sha of `main`, or None when the repo does not exist."""
        refs = self._refs(repo_id)
        if refs is None:
            return None
        return next((b.target_commit for b in refs.branches if b.name == MAIN), None)

    def find_tag(self, repo_id: str, tag: str) -> HubCommit | None:
        """The commit `tag` points to, or None when the repo or the tag does not exist."""
        validate_tag(tag)
        refs = self._refs(repo_id)
        if refs is None:
            return None
        sha = next((t.target_commit for t in refs.tags if t.name == tag), None)
        return self._commit(repo_id, sha, tag) if sha else None

    def record_at(self, repo_id: str, revision: str) -> str | None:
        """The text of deploygate.json at `revision` (what that commit was built for); None when
        the commit has none (pushed by an earlier release, or by something else)."""
        api = self._api()
        with tempfile.TemporaryDirectory(prefix="deploygate-record-") as tmp:
            try:
                path = self._call(
                    f"read {RECORD_FILE} at {revision[:12]} of",
                    repo_id,
                    lambda: api.hf_hub_download(
                        repo_id, RECORD_FILE, revision=revision, cache_dir=Path(tmp) / "cache"
                    ),
                )
            except HubError as exc:
                if _status(exc) == 404:
                    return None
                raise
            return Path(path).read_text(encoding="utf-8", errors="replace")

    def tag_for(
        self, repo_id: str, tag: str, expected: VersionIdentity, *, recorded_commit: str | None
    ) -> HubCommit | None:
        """The commit of `tag` when it was made for the `expected` version; None when there is no
        such tag. HubError (naming both versions and the fix) when it was made for another one, or
        when nothing says whose it is: a tag without deploygate.json (an earlier release's push) is
        this version's only when MLflow recorded its commit on the version (`recorded_commit`)."""
        existing = self.find_tag(repo_id, tag)
        if existing is None:
            return None
        found = parse_record(self.record_at(repo_id, existing.sha))
        fix = (
            f"Fix: if {repo_id} belonged to a registered model that was renamed or deleted and recreated "
            f"(its versions restart at 1), push to a new repo (hf-model-id), or delete its stale v<N> tags at "
            f"{self.endpoint}/{repo_id}/tree/main (the commits stay in the history) and re-run the same command."
        )
        if found is None:
            if recorded_commit and (
                recorded_commit == existing.sha or self._same_tree(repo_id, recorded_commit, existing.sha)
            ):
                return existing  # an earlier release's push, recorded on this very version
            raise HubError(
                f"Hub tag {tag} in {repo_id} (commit {existing.sha[:12]}) has no {RECORD_FILE} and "
                f"{expected.describe()} records no Hub commit for it: it may hold another model.",
                hint=fix,
            )
        differences = mismatch(expected, found)
        if differences:
            raise HubError(
                f"Hub tag {tag} in {repo_id} was made for {found.describe()}, but this is "
                f"{expected.describe()} ({', '.join(differences)} differ); a tag is never trusted by its "
                "name.",
                hint=fix,
            )
        return existing

    def snapshot(self, repo_id: str, local_dir: Path, *, revision: str | None = None) -> Path:
        """Download a repo's files (e.g. the base model) into `local_dir`."""
        validate_repo_id(repo_id, allow_canonical=True)
        api = self._api()
        self._call(
            "download",
            repo_id,
            lambda: api.snapshot_download(
                repo_id, revision=revision, local_dir=local_dir, cache_dir=local_dir.parent / ".hf-cache"
            ),
        )
        return local_dir

    def base_skeleton(self, repo_id: str, local_dir: Path) -> str | None:
        """Lay out a base model in `local_dir` without the data of its weights, before any large
        download: its other files downloaded, each top-level safetensors file written sparse (its
        header, then a hole up to its real size: the merge reads tensors by offset, `fetch_ranges`
        fills in what a shard needs). The commit the files are from, or None when the base's weights
        are not safetensors (then `snapshot` it)."""
        sha, sizes = self._file_sizes(repo_id)
        weights = sorted(n for n in sizes if n.endswith(".safetensors") and "/" not in n)
        if not weights or any(sizes[n] is None for n in weights):
            return None
        api = self._api()
        local_dir.mkdir(parents=True, exist_ok=True)
        self._call(
            "download",
            repo_id,
            lambda: api.snapshot_download(
                repo_id,
                revision=sha,
                local_dir=local_dir,
                cache_dir=local_dir.parent / ".hf-cache",
                ignore_patterns=[f"*{suffix}" for suffix in _WEIGHT_SUFFIXES],
            ),
        )
        for name in weights:
            self._sparse_weights(repo_id, sha, name, local_dir / name, int(sizes[name] or 0))
        return sha

    def safetensors_sizes(self, repo_id: str) -> tuple[dict[str, int], int] | None:
        """(file -> size of each top-level safetensors file, largest tensor in bytes) of a Hub model,
        from its file list and headers alone (range requests, nothing else downloaded); None when
        its weights are not safetensors."""
        sha, listed = self._file_sizes(repo_id)
        sizes = {
            name: size
            for name, size in listed.items()
            if name.endswith(".safetensors") and "/" not in name and size is not None
        }
        if not sizes:
            return None
        largest = 0
        for name in sizes:
            header = json.loads(self._header(repo_id, sha, name, sizes[name])[8:])
            header.pop("__metadata__", None)
            spans = [e["data_offsets"] for e in header.values() if isinstance(e, dict)]
            largest = max([largest, *(int(end) - int(begin) for begin, end in spans)])
        return sizes, largest

    def fetch_ranges(
        self,
        repo_id: str,
        revision: str,
        local_dir: Path,
        ranges: Sequence[ByteRange],
        arrived: Callable[[ByteRange, int], None] | None = None,
    ) -> int:
        """Download these byte ranges of the base's files (HTTP range requests) into the sparse files
        `base_skeleton` laid out, at their offsets, in order; `arrived(range, end)` once the range's bytes
        up to `end` are written. The bytes fetched."""
        for byte_range in ranges:
            path = local_dir / byte_range.file
            what = f"download bytes {byte_range.start}-{byte_range.end} of {byte_range.file} from"
            self._call(what, repo_id, _bind(self._range_into, repo_id, revision, byte_range, path, arrived))
        return sum(r.nbytes for r in ranges)

    def drop_ranges(self, local_dir: Path, ranges: Sequence[ByteRange]) -> None:
        """Give back the disk of fetched ranges: each file is cut to its header and grown back to its
        size (a hole). The file must then hold no other range still needed: the merge fetches a
        shard's ranges, writes the shard, drops them, and no two shards need the same bytes."""
        for name in sorted({r.file for r in ranges}):
            path = local_dir / name
            size = path.stat().st_size
            with path.open("r+b") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                handle.truncate(8 + length)
                handle.truncate(size)

    def punch(self, local_dir: Path, byte_range: ByteRange) -> bool:
        """Give back the disk of one fetched range at once (a hole punched in its file, the file's size
        and its other bytes unchanged); False where the file system or platform cannot, and then the
        bytes stay until `drop_ranges`."""
        fd = os.open(local_dir / byte_range.file, os.O_WRONLY)
        try:
            return _punch_hole(fd, byte_range.start, byte_range.nbytes)
        finally:
            os.close(fd)

    def _sparse_weights(self, repo_id: str, revision: str, name: str, path: Path, size: int) -> None:
        header = self._header(repo_id, revision, name, size)
        with path.open("wb") as handle:
            handle.write(header)
            handle.truncate(size)

    def _file_sizes(self, repo_id: str) -> tuple[str, dict[str, int | None]]:
        """(commit, file -> size) of a base model on the Hub; asked once per repo and run."""
        if repo_id not in self._base_files:
            validate_repo_id(repo_id, allow_canonical=True)
            api = self._api()
            info = self._call("read", repo_id, lambda: api.model_info(repo_id, files_metadata=True))
            self._base_files[repo_id] = (str(info.sha), {s.rfilename: s.size for s in info.siblings or []})
        return self._base_files[repo_id]

    def _header(self, repo_id: str, revision: str, name: str, size: int) -> bytes:
        """The first 8 bytes of a safetensors file and the JSON header they announce (read once)."""
        key = (repo_id, revision, name)
        if key not in self._headers:
            self._headers[key] = self._read_header(repo_id, revision, name, size)
        return self._headers[key]

    def _read_header(self, repo_id: str, revision: str, name: str, size: int) -> bytes:
        (length,) = struct.unpack("<Q", self._range_bytes(repo_id, revision, name, 0, 8))
        if length > 100_000_000 or 8 + length > size:
            raise HubError(
                f"Hub: {repo_id}/{name} is not a safetensors file (a header of {length} bytes in {size}).",
                hint="Fix: point base-model at a model saved with safetensors, or at a local folder.",
            )
        return struct.pack("<Q", length) + self._range_bytes(repo_id, revision, name, 8, 8 + length)

    def _range_bytes(self, repo_id: str, revision: str, name: str, start: int, end: int) -> bytes:
        data = bytearray(end - start)

        def keep(offset: int, chunk: bytes) -> None:
            data[offset - start : offset - start + len(chunk)] = chunk

        self._call(
            f"read bytes {start}-{end} of {name} from",
            repo_id,
            lambda: self._range_get(repo_id, revision, ByteRange(name, start, end), keep),
        )
        return bytes(data)

    def _range_into(
        self,
        repo_id: str,
        revision: str,
        byte_range: ByteRange,
        path: Path,
        arrived: Callable[[ByteRange, int], None] | None,
    ) -> None:
        fd = os.open(path, os.O_WRONLY)

        def write(offset: int, chunk: bytes) -> None:
            _pwrite_all(fd, chunk, offset)
            if arrived is not None:
                arrived(byte_range, offset + len(chunk))

        try:
            self._range_get(repo_id, revision, byte_range, write)
        finally:
            os.close(fd)

    def _range_get(
        self, repo_id: str, revision: str, byte_range: ByteRange, write: Callable[[int, bytes], None]
    ) -> None:
        """GET one byte range of a file at `revision`, handing each chunk to `write(offset, chunk)`."""
        from huggingface_hub import get_session, hf_hub_url, hf_raise_for_status
        from huggingface_hub.utils._headers import build_hf_headers

        _install_timeout(self.timeout)
        url = hf_hub_url(repo_id, byte_range.file, revision=revision, endpoint=self.endpoint)
        headers = build_hf_headers(
            token=self.token or False, headers={"Range": f"bytes={byte_range.start}-{byte_range.end - 1}"}
        )
        offset = byte_range.start
        with get_session().stream("GET", url, headers=headers, follow_redirects=True) as response:
            hf_raise_for_status(response)
            if response.status_code != 206 and byte_range.start != 0:
                raise HubError(
                    f"Hub: {self.endpoint} ignored a range request for {repo_id}/{byte_range.file}.",
                    hint="Fix: use a Hub (or proxy) that answers HTTP range requests, or a local base-model folder.",
                )
            for chunk in response.iter_bytes(_RANGE_CHUNK):
                piece = chunk[: byte_range.end - offset]
                write(offset, piece)
                offset += len(piece)
                if offset >= byte_range.end:
                    break
        if offset != byte_range.end:  # the connection ended early: retried as a transport error
            raise ConnectionError(
                f"{byte_range.file}: got {offset - byte_range.start} of {byte_range.nbytes} bytes"
            )

    # --- writes ----------------------------------------------------------------------------------

    def stage(self, repo_id: str, path_in_repo: str, local: Path, *, private: bool) -> StagedFile:
        """Upload one file of the next `push` now, ahead of its commit (`preupload_lfs_files`): an LFS
        object the Hub keeps unreferenced until a commit names it. The LFS batch answer has no upload
        action for an object the Hub already holds, so a re-run does not upload it again. Creates the
        repo (with `private`) on the first call. `push(..., staged=[path_in_repo])` commits it."""
        from huggingface_hub import CommitOperationAdd

        validate_repo_id(repo_id)
        api = self._api(write=True)
        self._ensure_repo(repo_id, private)
        operation = CommitOperationAdd(path_in_repo=path_in_repo, path_or_fileobj=str(local))
        digest = FileDigest(operation.upload_info.sha256.hex(), operation.upload_info.size)
        self._call(
            f"pre-upload {path_in_repo} to",
            repo_id,
            lambda: api.preupload_lfs_files(repo_id, additions=[operation]),
        )
        self._staged[(repo_id, path_in_repo)] = operation
        # preupload_lfs_files marks what it uploaded (and drops its path); a regular file stays inline
        return StagedFile(path_in_repo, digest, uploaded=bool(getattr(operation, "_is_uploaded", False)))

    def _ensure_repo(self, repo_id: str, private: bool) -> None:
        if repo_id in self._created:
            return
        api = self._api(write=True)
        self._call(
            "create the Hub repo", repo_id, lambda: api.create_repo(repo_id, private=private, exist_ok=True)
        )
        self._created.add(repo_id)

    def push(
        self,
        repo_id: str,
        folder: Path,
        *,
        commit_message: str,
        private: bool,
        tag: str | None = None,
        staged: Sequence[str] = (),
    ) -> HubCommit:
        """Make `main` hold exactly the files of `folder` (and the `staged` ones, uploaded ahead by
        `stage`) in ONE commit, then tag that commit. The result's manifest has every file's digest.

        Creates the repo if needed (with `private`; an existing repo keeps its visibility). Files on
        the Hub that are not in `folder` are deleted in the same commit (`.gitattributes` stays).
        Unchanged files are not uploaded again. If `tag` already names a commit with exactly these
        files, nothing is pushed and that commit is returned (a re-run after a partial failure); if it
        names different files, HubError: a version tag is never moved.
        """
        validate_repo_id(repo_id)
        if tag is not None:
            validate_tag(tag)
        if not commit_message.strip():
            raise ConfigError("The Hub commit message is empty.", hint="Pass a commit message.")
        operations = self._operations(repo_id, folder, staged)
        manifest = {
            p: FileDigest(op.upload_info.sha256.hex(), op.upload_info.size) for p, op in operations.items()
        }

        if tag is not None and (existing := self.find_tag(repo_id, tag)) is not None:
            if self._same_files(repo_id, existing.sha, folder, operations):
                log.info("Hub: %s@%s already holds these files; not pushing again", repo_id, tag)
                return self._commit(repo_id, existing.sha, tag, manifest)
            raise HubError(
                f"Hub tag {tag} already exists in {repo_id} on commit {existing.sha[:12]} with different "
                f"files; a version tag is never moved.",
                hint=f"Fix: deploy under a new version, or delete the tag ({self.endpoint}/{repo_id}/tree/"
                f"{tag}) if that push was a mistake.",
            )

        self._ensure_repo(repo_id, private)
        sha = self._call(
            "push to", repo_id, lambda: self._commit_folder(repo_id, folder, operations, commit_message)
        )
        for path in staged:
            self._staged.pop((repo_id, path), None)
        if tag is not None:
            self._tag(repo_id, tag, sha)
        return self._commit(repo_id, sha, tag, manifest)

    def restore_tag(self, repo_id: str, tag: str, *, commit_message: str) -> HubCommit:
        """Make `main` hold exactly the files of `tag` again, in a NEW commit (history is kept)."""
        validate_repo_id(repo_id)
        validate_tag(tag)
        target = self.find_tag(repo_id, tag)
        if target is None:
            raise HubError(
                f"Hub tag {tag} not found in {repo_id}; cannot restore it.",
                hint=f"Fix: pick one of the tags listed at {self.endpoint}/{repo_id}/tree/main.",
            )
        api = self._api(write=True)
        with tempfile.TemporaryDirectory(prefix="deploygate-restore-") as tmp:
            snapshot = Path(tmp) / "snapshot"
            self._call(
                f"download tag {tag} of",
                repo_id,
                lambda: api.snapshot_download(
                    repo_id, revision=target.sha, local_dir=snapshot, cache_dir=Path(tmp) / "cache"
                ),
            )
            operations = self._operations(repo_id, snapshot, ())
            sha = self._call(
                "restore", repo_id, lambda: self._commit_folder(repo_id, snapshot, operations, commit_message)
            )
        return self._commit(repo_id, sha, tag)

    # --- internals -------------------------------------------------------------------------------

    def _api(self, *, write: bool = False) -> HfApi:
        _install_timeout(self.timeout)
        if write and not self.token:
            raise HubError(
                "No Hugging Face token: pushing to the Hub needs one.",
                hint=f"Fix: create a write token at {self._tokens_url()} and set HF_TOKEN.",
            )
        if self._api_instance is None:
            from huggingface_hub import HfApi

            # token=False: anonymous reads instead of silently using a token stored on this machine
            self._api_instance = HfApi(endpoint=self.endpoint, token=self.token or False)
        return self._api_instance

    def _whoami(self) -> dict[str, Any]:
        if not self.token:
            raise HubError(
                "No Hugging Face token.",
                hint=f"Fix: create a write token at {self._tokens_url()} and set HF_TOKEN.",
            )
        api = self._api()
        return dict(
            self._call("check the Hub token at", self.endpoint, lambda: api.whoami(), repo_scoped=False)
        )

    def _refs(self, repo_id: str) -> Any | None:
        validate_repo_id(repo_id)
        api = self._api()
        try:
            return self._call("list the refs of", repo_id, lambda: api.list_repo_refs(repo_id))
        except HubError as exc:
            if _status(exc) == 404:
                return None
            raise

    def _commit(
        self, repo_id: str, sha: str, tag: str | None, manifest: Mapping[str, FileDigest] | None = None
    ) -> HubCommit:
        return HubCommit(
            repo_id=repo_id,
            sha=sha,
            url=f"{self.endpoint}/{repo_id}/commit/{sha}",
            tag=tag,
            manifest=dict(manifest or {}),
        )

    def _operations(self, repo_id: str, folder: Path, staged: Sequence[str]) -> dict[str, Any]:
        """path -> CommitOperationAdd of every file of the commit: the folder's, and the staged ones."""
        from huggingface_hub import CommitOperationAdd

        operations: dict[str, Any] = {
            p: CommitOperationAdd(path_in_repo=p, path_or_fileobj=str(folder / p))
            for p in _local_files(folder)
        }
        for path in staged:
            if (repo_id, path) not in self._staged:
                raise ConfigError(f"{path}: not staged for {repo_id}; stage() it before the push.")
            operations[path] = self._staged[(repo_id, path)]
        return dict(sorted(operations.items()))

    def _commit_folder(self, repo_id: str, folder: Path, adds: Mapping[str, Any], message: str) -> str:
        """One commit: add every file of `adds`, delete every remote file it does not have. Returns
        the sha of `main` holding those files: no new commit when it already does (a retry whose
        first answer was lost, a re-run after the tag step failed)."""
        from huggingface_hub import CommitOperationDelete
        from huggingface_hub.errors import HfHubHTTPError

        api = self._api(write=True)
        for race in range(_PARENT_RACES + 1):
            head = self.head(repo_id)
            if head and self._same_files(repo_id, head, folder, adds):
                log.info("Hub: main of %s already holds these files (%s); no new commit", repo_id, head[:12])
                return head
            remote = set(api.list_repo_files(repo_id, revision=head)) if head else set()
            stale = sorted(remote - set(adds) - {".gitattributes"})
            operations: list[Any] = [CommitOperationDelete(path_in_repo=p) for p in stale]
            operations += list(adds.values())
            # parent_commit: if main moved since we listed it, the Hub refuses instead of mixing two pushes;
            # then the stale list is recomputed against the new head and the commit tried again
            try:
                info: CommitInfo = api.create_commit(
                    repo_id, operations=operations, commit_message=message, parent_commit=head
                )
            except HfHubHTTPError as exc:
                if (
                    exc.response is None
                    or exc.response.status_code not in (409, 412)
                    or race == _PARENT_RACES
                ):
                    raise
                log.warning(
                    "Hub: main of %s moved during the push (%s); committing again on the new head",
                    repo_id,
                    exc.response.status_code,
                )
                continue
            return str(info.oid)
        raise AssertionError("unreachable")

    def sync_main(self, repo_id: str, tag: str, *, commit_message: str) -> HubCommit | None:
        """Make `main` hold exactly the files of `tag` (a new commit only when it does not already).
        Returns the commit on main, or None when the tag does not exist."""
        validate_repo_id(repo_id)
        validate_tag(tag)
        target = self.find_tag(repo_id, tag)
        if target is None:
            return None
        head = self.head(repo_id)
        if head is not None and (
            head == target.sha or self._tree(repo_id, head) == self._tree(repo_id, target.sha)
        ):
            return self._commit(repo_id, head, tag)
        log.info("Hub: main of %s does not hold %s; restoring its files", repo_id, tag)
        return self.restore_tag(repo_id, tag, commit_message=commit_message)

    def adopt_push(
        self, repo_id: str, tag: str, title_prefix: str, expected: VersionIdentity, *, depth: int = 20
    ) -> HubCommit | None:
        """Tag an untagged push of the `expected` version with `tag`: the newest of main's last
        `depth` commits whose title starts with `title_prefix` and whose deploygate.json names this
        version (a run that died, or whose tag call failed, after its commit; main may have been put
        back to the champion since). None when there is none; main is left as it is."""
        validate_tag(tag)
        head = self.head(repo_id)
        if head is None:
            return None
        api = self._api()
        commits = self._call(
            "list the commits of", repo_id, lambda: api.list_repo_commits(repo_id, revision=head)
        )
        for commit in commits[:depth]:
            if not commit.title.startswith(title_prefix):
                continue
            found = parse_record(self.record_at(repo_id, commit.commit_id))
            if found is None or mismatch(expected, found):
                continue
            log.info(
                "Hub: %s of %s is an untagged push of this version; tagging it %s",
                commit.commit_id[:12],
                repo_id,
                tag,
            )
            self._tag(repo_id, tag, commit.commit_id)
            return self._commit(repo_id, commit.commit_id, tag)
        return None

    def _same_tree(self, repo_id: str, a: str, b: str) -> bool:
        """Whether two commits hold the same files; False when `a` is not a commit of this repo."""
        try:
            return self._tree(repo_id, a) == self._tree(repo_id, b)
        except HubError as exc:
            if _status(exc) == 404:
                return False
            raise

    def _tree(self, repo_id: str, revision: str) -> dict[str, str]:
        from huggingface_hub.hf_api import RepoFile

        api = self._api()
        tree = self._call(
            "list the files of",
            repo_id,
            lambda: list(api.list_repo_tree(repo_id, revision=revision, recursive=True)),
        )
        return {
            f.path: (f.lfs.sha256 if f.lfs is not None else f.blob_id)
            for f in tree
            if isinstance(f, RepoFile)
        }

    def _tag(self, repo_id: str, tag: str, sha: str) -> None:
        api = self._api(write=True)
        try:
            self._call(
                f"create tag {tag} in", repo_id, lambda: api.create_tag(repo_id, tag=tag, revision=sha)
            )
        except HubError as exc:
            if _status(exc) != 409:
                raise
            existing = self.find_tag(repo_id, tag)  # 409: idempotent if it already names this commit
            if existing is None or existing.sha != sha:
                where = f"commit {existing.sha[:12]}" if existing else "another ref"
                raise HubError(
                    f"Hub tag {tag} in {repo_id} already points to {where}, not to the new commit "
                    f"{sha[:12]}.",
                    hint="Fix: deploy under a new version, or delete the stale tag on the Hub and re-run.",
                ) from exc

    def _same_files(self, repo_id: str, sha: str, folder: Path, adds: Mapping[str, Any]) -> bool:
        """Whether commit `sha` holds exactly the files of `adds` (CommitOperationAdd by path; a
        staged one's file may be gone: its recorded digest counts)."""
        from huggingface_hub.hf_api import RepoFile

        api = self._api()
        tree = self._call(
            "list the files of",
            repo_id,
            lambda: list(api.list_repo_tree(repo_id, revision=sha, recursive=True)),
        )
        remote = {f.path: f for f in tree if isinstance(f, RepoFile)}
        if ".gitattributes" not in adds:
            remote.pop(".gitattributes", None)  # the Hub creates it; pushes never delete it
        if set(remote) != set(adds):
            return False
        for path, operation in adds.items():
            local = folder / path
            entry = remote[path]
            if entry.lfs is not None:
                info = operation.upload_info
                if info.size != entry.lfs.size or info.sha256.hex() != entry.lfs.sha256:
                    return False
            elif not local.is_file() or _git_blob_sha1(local) != entry.blob_id:
                return False
        return True

    def _quiet(self) -> contextlib.AbstractContextManager[Any]:
        """Progress bars off for our calls only (they clutter CI logs), unless asked for."""
        if self._progress_bars:
            return contextlib.nullcontext()
        from huggingface_hub.utils.tqdm import disable_progress_bars

        with warnings.catch_warnings():  # it warns when HF_HUB_DISABLE_PROGRESS_BARS=0 wins
            warnings.simplefilter("ignore")
            return disable_progress_bars()

    def _tokens_url(self) -> str:
        return f"{self.endpoint}/settings/tokens"

    def _call(self, action: str, target: str, fn: Callable[[], T], *, repo_scoped: bool = True) -> T:
        """Run `fn`, retrying transient failures; translate any failure into HubError."""
        for attempt in range(self.retries + 1):
            try:
                with self._quiet():
                    return fn()
            except HubError:
                raise
            except Exception as exc:
                status, transient = _classify(exc)
                if not transient or attempt == self.retries:
                    raise _translate(
                        exc, status, action, target, self, attempts=attempt + 1, repo_scoped=repo_scoped
                    ) from exc
                delay = min(self.backoff * 2**attempt, _MAX_DELAY)
                log.warning(
                    "Hub: could not %s %s (%s); retry %d/%d in %.1fs",
                    action,
                    target,
                    _short(exc, status),
                    attempt + 1,
                    self.retries,
                    delay,
                )
                self._sleep(delay)
        raise AssertionError("unreachable")


def _install_timeout(seconds: float) -> None:
    """Give huggingface_hub's shared HTTP client a timeout (it has none by default). Process-wide:
    the client is shared by every caller of huggingface_hub in this process."""
    global _timeout_installed
    if _timeout_installed == seconds:
        return
    import httpx2
    from huggingface_hub import set_client_factory

    try:
        from huggingface_hub.utils._http import default_client_factory as base_factory
    except ImportError:  # pragma: no cover - a later huggingface_hub may move it

        def base_factory() -> httpx2.Client:
            return httpx2.Client(follow_redirects=True)

    def factory() -> httpx2.Client:
        client = base_factory()
        client.timeout = httpx2.Timeout(seconds, connect=min(seconds, 10.0))
        return client

    set_client_factory(factory)
    _timeout_installed = seconds


# --- error translation ---------------------------------------------------------------------------------


def _status(exc: HubError) -> int | None:
    return exc.status if isinstance(exc, HubHTTPError) else None


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _classify(exc: BaseException) -> tuple[int | None, bool]:
    """(HTTP status if any, whether retrying may help)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    transport: tuple[type[BaseException], ...] = (httpx2.TransportError, ConnectionError, TimeoutError)
    try:
        import requests

        transport += (requests.exceptions.ConnectionError, requests.exceptions.Timeout)
    except ImportError:  # pragma: no cover - requests is a dependency, but only a transitive one here
        pass
    for cause in _causes(exc):
        if isinstance(cause, OfflineModeIsEnabled):
            return None, False
        if isinstance(cause, HfHubHTTPError) and cause.response is not None:
            status = int(cause.response.status_code)
            return status, status in _TRANSIENT_STATUS
        if isinstance(cause, transport):
            return None, True
    return None, False


def _short(exc: BaseException, status: int | None) -> str:
    if status is not None:
        return f"HTTP {status}"
    root = list(_causes(exc))[-1]
    text = first_line(root, default="")
    return f"{type(root).__name__}: {text}"[:200]


def _server_message(exc: BaseException) -> str:
    for cause in _causes(exc):
        message = getattr(cause, "server_message", None)
        if message:
            return " ".join(str(message).split())[:200]
    return ""


@dataclass(frozen=True)
class _Failure:
    """What _translate knows of one failed Hub call, in the words its messages use."""

    exc: BaseException
    status: int | None
    what: str  # "Hub: could not <action> <target>"
    said: str  # " (<the server's message>)" or ""
    tries: str  # " after N attempts" or ""
    target: str
    namespace: str
    kinds: frozenset[type[BaseException]]

    def has(self, kind: type[BaseException]) -> bool:
        return any(issubclass(k, kind) for k in self.kinds)


def _translate(
    exc: BaseException,
    status: int | None,
    action: str,
    target: str,
    hub: HubPublisher,
    *,
    attempts: int,
    repo_scoped: bool,
) -> HubError:
    """Each Hub/transport failure to its deploygate error and fix, checked in order: offline, the
    token and what it can see, what the Hub refused, then what went wrong on this side."""
    from huggingface_hub.errors import OfflineModeIsEnabled, RepositoryNotFoundError

    causes = list(_causes(exc))
    if any(isinstance(c, RepositoryNotFoundError) for c in causes):
        status = 404  # the Hub says 401 for private repos when anonymous: still "not found" for us
    said = _server_message(exc)
    failure = _Failure(
        exc=exc,
        status=status,
        what=f"Hub: could not {action} {target}",
        said=f" ({said})" if said else "",
        tries=f" after {attempts} attempts" if attempts > 1 else "",
        target=target,
        namespace=target.split("/")[0] if repo_scoped else "your namespace",
        kinds=frozenset(type(c) for c in causes),
    )
    if failure.has(OfflineModeIsEnabled):
        message = f"{failure.what}: HF_HUB_OFFLINE is set."
        hint = "Fix: unset HF_HUB_OFFLINE for runs that deploy."
    else:
        message, hint = _access_failure(failure, hub) or _refusal(failure) or _local_failure(failure, hub)
    return HubHTTPError(message, hint=hint, status=status)


def _access_failure(f: _Failure, hub: HubPublisher) -> tuple[str, str] | None:
    """The token (401/403) and what it can see (a revision, a file, the repository)."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    if f.status == 401:
        return (
            f"{f.what}: HF_TOKEN is invalid or expired (401){f.said}.",
            f"Fix: create a write token at {hub._tokens_url()} and set it as HF_TOKEN.",
        )
    if f.status == 403:
        return (
            f"{f.what}: the token lacks write access to {f.target} (403){f.said}.",
            f"Fix: use a token with the 'write' role (or fine-grained write access to '{f.namespace}') from "
            f"{hub._tokens_url()}.",
        )
    if f.has(RevisionNotFoundError):
        return (
            f"{f.what}: revision or tag not found (404){f.said}.",
            f"Fix: check the tag / branch name at {hub.endpoint}/{f.target}/tree/main.",
        )
    if f.has(EntryNotFoundError):
        return (
            f"{f.what}: file not found (404){f.said}.",
            "Fix: check the file name; it may have been deleted on the Hub.",
        )
    if f.has(RepositoryNotFoundError) or f.status == 404:
        return (
            f"{f.what}: repository not found or not visible to this token (404).",
            f"Fix: check the repo id, and that the token can read private repos under '{f.namespace}'.",
        )
    return None


def _refusal(f: _Failure) -> tuple[str, str] | None:
    """Any other HTTP answer: a conflict, rate limiting, the Hub's own trouble, a refused request."""
    if f.status in (409, 412):
        return (
            f"{f.what}: the Hub refused because {f.target} changed meanwhile ({f.status}){f.said}.",
            "Fix: make sure only one deployment pushes to this repo at a time, then re-run.",
        )
    if f.status == 429:
        return f"{f.what}: rate limited by the Hub (429){f.tries}.", "Fix: wait a few minutes and re-run."
    if f.status is not None and f.status >= 500:
        return (
            f"{f.what}: the Hub answered {f.status}{f.tries}{f.said}.",
            "Fix: the Hub is having trouble; re-run later (see https://status.huggingface.co).",
        )
    if f.status is not None:
        return (
            f"{f.what}: the Hub refused the request ({f.status}){f.said}.",
            "Fix: check the repo id, the files pushed and the README metadata.",
        )
    return None


def _local_failure(f: _Failure, hub: HubPublisher) -> tuple[str, str]:
    """No HTTP answer: the network, the card's metadata, the folder to push, or something else."""
    from huggingface_hub.errors import RepositoryNotFoundError

    if _classify(f.exc)[1]:
        return (
            f"{f.what}: cannot reach {hub.endpoint}{f.tries} ({_short(f.exc, None)}).",
            "Fix: check the network / proxy, and HF_ENDPOINT if you set it.",
        )
    if isinstance(f.exc, ValueError) and "metadata" in str(f.exc).lower():
        return (
            f"{f.what}: the model card metadata was rejected ({' '.join(str(f.exc).split())[:200]}).",
            "Fix: check the YAML header of README.md (the model card template).",
        )
    if isinstance(f.exc, OSError) and not f.has(RepositoryNotFoundError):
        return (
            f"{f.what}: {_short(f.exc, None)}.",
            "Fix: check that the folder to push is readable and complete.",
        )
    return (
        f"{f.what}: {_short(f.exc, None)}.",
        "Fix: re-run with -v (or RUNNER_DEBUG=1) to see the full error.",
    )


# --- local files ---------------------------------------------------------------------------------------


def _local_files(folder: Path) -> list[str]:
    """Relative POSIX paths of the files to push, sorted; raises ConfigError for a missing/empty folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"The folder to push to the Hub does not exist: {str(folder)!r}.")
    files = []
    for path in folder.rglob("*"):
        rel = PurePosixPath(path.relative_to(folder).as_posix())
        if any(str(rel) == d or str(rel).startswith(d + "/") for d in _SKIPPED_DIRS):
            continue
        if path.is_file():
            files.append(str(rel))
    if not files:
        raise ConfigError(f"The folder to push to the Hub is empty: {str(folder)!r}.")
    return sorted(files)


def _bind(function: Callable[..., None], *args: Any) -> Callable[[], None]:
    return lambda: function(*args)


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02  # linux/falloc.h


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    """fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads as zeros and its whole blocks are freed.
    False (nothing changed) where there is no fallocate or the file system refuses it."""
    if length <= 0:
        return True
    fallocate = _fallocate()
    if fallocate is None:
        return False
    return fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0


@functools.cache
def _fallocate() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    function = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    function.restype = ctypes.c_int
    return cast("Callable[[int, int, int, int], int]", function)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _git_blob_sha1(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
