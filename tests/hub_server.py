"""A local Hugging Face Hub-compatible HTTP server for integration tests.

It speaks the subset of the real Hub protocol that `huggingface_hub` (2.x, with
`HF_HUB_DISABLE_XET`) uses for create_repo / delete_repo / upload_folder / create_commit
(preupload, LFS batch + PUT, NDJSON commit) / model_info / list_repo_files / list_repo_refs /
list_repo_commits / hf_hub_download / snapshot_download / create_tag / delete_tag / whoami /
auth_check, with the real error headers (`X-Error-Code`). Storage is in memory: git-like commits
with sha1 ids, branches and tags, LFS objects stored by sha256 (in memory, or as files in `lfs_dir`
for models larger than memory, as bench/scale.py serves them). The LFS batch endpoint answers with no
upload action for an object the repo already holds, as the Hub does, so a client skips it.

It must not reach the network, persist anything beyond `lfs_dir`, or be imported by deploygate itself: it is a test
fixture. Fault injection (`fail_next`, `drop_next`, `hang_next`) and a request log let tests check
retries and what was (not) sent.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml


class LfsStore:
    """LFS objects by sha256: in memory, or one file per object under `folder`."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder
        self._memory: dict[str, bytes] = {}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def __contains__(self, oid: object) -> bool:
        if self.folder is None:
            return oid in self._memory
        return (
            isinstance(oid, str)
            and re.fullmatch(r"[0-9a-f]{64}", oid) is not None
            and (self.folder / oid).is_file()
        )

    def __setitem__(self, oid: str, data: bytes) -> None:
        if self.folder is None:
            self._memory[oid] = data
        else:
            tmp = self.folder / f".{oid}.{secrets.token_hex(4)}"
            tmp.write_bytes(data)
            tmp.replace(self.folder / oid)

    def __getitem__(self, oid: str) -> bytes:
        return self.read(oid, 0, self.size(oid))

    def adopt(self, oid: str, spooled: SpooledBody) -> None:
        """Keep an upload that was spooled to a file (see `spool_request_body`: only a store that
        keeps objects as files gets one) as object `oid`."""
        assert self.folder is not None
        spooled.path.replace(self.folder / oid)

    def file(self, oid: str) -> Path | None:
        """The object's file, when objects are kept as files."""
        return None if self.folder is None else self.folder / oid

    def size(self, oid: str) -> int:
        return len(self._memory[oid]) if self.folder is None else (self.folder / oid).stat().st_size

    def read(self, oid: str, start: int, end: int) -> bytes:
        if self.folder is None:
            return self._memory[oid][start:end]
        with (self.folder / oid).open("rb") as handle:
            handle.seek(start)
            return handle.read(end - start)


# What the real Hub's default .gitattributes marks as LFS (abridged): these always go through LFS.
LFS_SUFFIXES = (
    ".7z",
    ".arrow",
    ".bin",
    ".bz2",
    ".ckpt",
    ".ftz",
    ".gz",
    ".h5",
    ".joblib",
    ".mlmodel",
    ".model",
    ".msgpack",
    ".npy",
    ".npz",
    ".onnx",
    ".ot",
    ".parquet",
    ".pb",
    ".pickle",
    ".pkl",
    ".pt",
    ".pth",
    ".rar",
    ".safetensors",
    ".tar",
    ".tflite",
    ".tgz",
    ".wasm",
    ".xz",
    ".zip",
    ".zst",
    ".gguf",
)
GITATTRIBUTES = "".join(f"*{s} filter=lfs diff=lfs merge=lfs -text\n" for s in LFS_SUFFIXES).encode()
REGULAR_MAX_BYTES = 10 * 1024 * 1024  # the real Hub sends anything bigger than 10 MB to LFS
LFS_POINTER = "version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n"
REPO_PART = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?$")
SHA1_HEX = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob (what the Hub returns as `oid` for regular files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# --- storage ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """One file in a commit: regular content, or an LFS pointer to `lfs_sha256`."""

    size: int
    oid: str  # git blob sha1 (of the pointer, for LFS files)
    content: bytes | None = None  # regular files only
    lfs_sha256: str | None = None

    @property
    def pointer_size(self) -> int:
        return len(LFS_POINTER.format(oid=self.lfs_sha256, size=self.size).encode())

    @property
    def etag(self) -> str:
        return self.lfs_sha256 or self.oid


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lfs: LfsStore = field(default_factory=LfsStore)  # sha256 -> content

    def resolve(self, revision: str) -> Commit | None:
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and SHA1_HEX.match(revision):
            sha = revision
        return self.commits.get(sha) if sha else None

    def add_commit(
        self, parent: str | None, files: dict[str, Blob], title: str, message: str, author: str
    ) -> Commit:
        listing = json.dumps({p: b.oid for p, b in sorted(files.items())})
        raw = f"tree {hashlib.sha1(listing.encode()).hexdigest()}\nparent {parent}\nauthor {author} {time.time_ns()}\n\n{title}\n{message}"
        commit = Commit(
            sha=hashlib.sha1(raw.encode() + secrets.token_bytes(8)).hexdigest(),
            parent=parent,
            title=title,
            message=message,
            author=author,
            date=_now(),
            files=files,
        )
        self.commits[commit.sha] = commit
        return commit


@dataclass(frozen=True)
class RequestRecord:
    """One handled request, as the request log keeps it."""

    method: str
    path: str
    query: str
    status: int  # 0 when the connection was dropped without a response
    authorized_as: str | None  # "write", "read", "invalid" or None (anonymous)
    bytes_in: int
    fault: bool = False


@dataclass
class _Fault:
    method: str
    path_regex: re.Pattern[str]
    times: int
    mode: str  # "status" | "drop" | "hang"
    status: int = 500
    body: Any = None
    headers: dict[str, str] | None = None
    seconds: float = 0.0
    after: int = 0  # matching requests to let through first


class HubProblem(Exception):
    """An error answer: status, X-Error-Code and a JSON body {"error": message}."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        extra: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra or {}
        self.headers = headers or {}


@dataclass(frozen=True)
class _Token:
    user: str
    role: str  # "write" | "read"


# --- the server ------------------------------------------------------------------------------------


class HubServer:
    """A Hub-compatible server on 127.0.0.1 in a background thread.

    `tokens` maps token -> role ("write" | "read"); all tokens belong to `user`, who may write to
    their own namespace and to `orgs`. Without a token, public repos are readable and writes get 401;
    an unknown token gets 401 everywhere; a read token gets 403 on writes.
    """

    def __init__(
        self,
        *,
        user: str = "dg-user",
        orgs: tuple[str, ...] = ("dg-org",),
        tokens: dict[str, str] | None = None,
        regular_max_bytes: int = REGULAR_MAX_BYTES,
        lfs_dir: Path | None = None,
    ) -> None:
        self.user = user
        self.orgs = orgs
        self.token = "hf_write_" + secrets.token_hex(8)
        self.readonly_token = "hf_read_" + secrets.token_hex(8)
        self.tokens: dict[str, _Token] = {
            self.token: _Token(user, "write"),
            self.readonly_token: _Token(user, "read"),
        }
        for tok, role in (tokens or {}).items():
            self.tokens[tok] = _Token(user, role)
        self.regular_max_bytes = regular_max_bytes
        self.lfs_dir = lfs_dir
        self.repos: dict[str, Repo] = {}
        self.requests: list[RequestRecord] = []
        self.lfs_bytes_received = 0
        self._uploads: dict[str, tuple[str, str, int]] = {}  # upload id -> (repo_id, oid, size)
        self._faults: list[_Fault] = []
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # lifecycle

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubServer:
        handler = type("BoundHubHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # test helpers

    def new_repo_id(self, prefix: str = "test") -> str:
        """A repo id that no other test uses, in the user's namespace."""
        return f"{self.user}/{prefix}-{uuid.uuid4().hex[:12]}"

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 500,
        times: int = 1,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        after: int = 0,
    ) -> None:
        """Answer the next `times` requests matching method + path (regex `search`) with `status`,
        once `after` matching requests have been answered normally."""
        self._add_fault(
            _Fault(
                method.upper(), re.compile(path_regex), times, "status", status, body, headers, after=after
            )
        )

    def drop_next(self, method: str, path_regex: str, times: int = 1) -> None:
        """Close the connection without any response (the client sees a protocol/connection error)."""
        self._add_fault(_Fault(method.upper(), re.compile(path_regex), times, "drop"))

    def hang_next(self, method: str, path_regex: str, seconds: float, times: int = 1) -> None:
        """Wait `seconds` (or until the server stops), then drop the connection without a response."""
        self._add_fault(_Fault(method.upper(), re.compile(path_regex), times, "hang", seconds=seconds))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def requests_matching(self, method: str, path_regex: str) -> list[RequestRecord]:
        pattern = re.compile(path_regex)
        with self._lock:
            return [r for r in self.requests if r.method == method.upper() and pattern.search(r.path)]

    def commits(self, repo_id: str, branch: str = "main") -> list[Commit]:
        """Commits reachable from `branch`, newest first."""
        with self._lock:
            repo = self.repos[repo_id]
            out: list[Commit] = []
            commit = repo.resolve(branch)
            while commit is not None:
                out.append(commit)
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return out

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method in (method, "*") and fault.path_regex.search(path):
                    if fault.after > 0:
                        fault.after -= 1
                        continue
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    # quiet: tests read `hub.requests` instead
    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_HEAD(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def do_PUT(self) -> None:
        self._handle()

    def do_DELETE(self) -> None:
        self._handle()

    # plumbing

    def _read_body(self, path: str) -> bytes | SpooledBody:
        """The request body; an LFS upload to a server that keeps objects as files is written to a
        file as it arrives and hashed on the way (a model's shards are bigger than memory)."""
        if self.command == "PUT" and path.startswith("/__lfs/upload/") and self.hub.lfs_dir is not None:
            spooled = spool_request_body(self, self.hub.lfs_dir)
            if spooled is not None:
                return spooled
        return read_request_body(self)

    def _auth(self) -> tuple[_Token | None, str | None]:
        header = self.headers.get("Authorization", "")
        if not header:
            return None, None
        token = header.removeprefix("Bearer ").strip()
        found = self.hub.tokens.get(token)
        return found, (found.role if found else "invalid")

    def _handle(self) -> None:
        split = urlsplit(self.path)
        body = self._read_body(split.path)
        token, auth_kind = self._auth()
        status = 0
        fault = self.hub._take_fault(self.command, split.path)
        try:
            if fault is not None:
                if fault.mode in ("drop", "hang"):
                    if fault.mode == "hang":
                        self.hub._stopping.wait(fault.seconds)
                    self.close_connection = True
                    return
                status = fault.status
                payload = (
                    fault.body if fault.body is not None else {"error": f"Injected {fault.status} error"}
                )
                self._send_json(status, payload, headers=fault.headers)
                return
            try:
                if auth_kind == "invalid":
                    raise HubProblem(401, "Invalid credentials in Authorization header")
                status = self._route(split.path, parse_qs(split.query), body, token)
            except HubProblem as err:
                status = err.status
                headers = dict(err.headers)
                if err.code:
                    headers["X-Error-Code"] = err.code
                self._send_json(err.status, {"error": err.message, **err.extra}, headers=headers)
        finally:
            with self.hub._lock:
                self.hub.requests.append(
                    RequestRecord(
                        self.command, split.path, split.query, status, auth_kind, len(body), fault is not None
                    )
                )
            if isinstance(body, SpooledBody):
                body.path.unlink(missing_ok=True)  # an upload that was refused (one kept was moved)

    def _send(
        self,
        status: int,
        data: bytes,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> int:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("X-Request-Id", uuid.uuid4().hex)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        return status

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> int:
        return self._send(status, json.dumps(payload).encode(), headers)

    # routing

    def _route(
        self, path: str, query: dict[str, list[str]], body: bytes | SpooledBody, token: _Token | None
    ) -> int:
        if isinstance(body, SpooledBody):  # only an LFS upload is spooled (see _read_body)
            return self._lfs_endpoint([unquote(p) for p in path.strip("/").split("/")][1:], body)
        parts = [unquote(p) for p in path.strip("/").split("/")]
        method = self.command
        if parts[:2] == ["api", "whoami-v2"] and method == "GET":
            return self._whoami(token)
        if parts[:2] == ["api", "repos"] and len(parts) == 3:
            data = _json(body)
            if parts[2] == "create" and method == "POST":
                return self._create_repo(data, token)
            if parts[2] == "delete" and method == "DELETE":
                return self._delete_repo(data, token)
        if parts[:2] == ["api", "validate-yaml"] and method == "POST":
            return self._validate_yaml(_json(body))
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._repo_api(f"{parts[2]}/{parts[3]}", parts[4:], query, body, token)
        if len(parts) >= 2 and parts[0] == "__lfs":
            return self._lfs_endpoint(parts[1:], body)
        if len(parts) == 6 and parts[1].endswith(".git") and parts[2:] == ["info", "lfs", "objects", "batch"]:
            return self._lfs_batch(f"{parts[0]}/{parts[1].removesuffix('.git')}", _json(body), token)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            # the revision segment is quoted by the client: split on the raw path first
            raw = path.strip("/").split("/")
            return self._resolve(
                f"{parts[0]}/{parts[1]}", unquote(raw[3]), "/".join(unquote(p) for p in raw[4:]), token
            )
        raise HubProblem(404, f"Not found: {method} {path}")

    def _repo_api(
        self, repo_id: str, rest: list[str], query: dict[str, list[str]], body: bytes, token: _Token | None
    ) -> int:
        method = self.command
        action = rest[0] if rest else ""
        arg = rest[1] if len(rest) > 1 else None
        if method == "GET" and action == "":
            return self._model_info(repo_id, "main", query, token)
        if method == "GET" and action == "revision" and arg:
            return self._model_info(repo_id, arg, query, token)
        if method == "GET" and action == "tree" and arg:
            return self._tree(repo_id, arg, "/".join(rest[2:]), query, token)
        if method == "GET" and action == "refs":
            return self._refs(repo_id, query, token)
        if method == "GET" and action == "commits" and arg:
            return self._commits(repo_id, arg, token)
        if method == "GET" and action == "auth-check":
            return self._auth_check(repo_id, write=arg == "write", token=token)
        if method == "POST" and action == "preupload" and arg:
            return self._preupload(repo_id, arg, _json(body), token)
        if method == "POST" and action == "commit" and arg:
            return self._commit(repo_id, arg, body, query, token)
        if method == "POST" and action == "tag" and arg:
            return self._create_tag(repo_id, arg, _json(body), token)
        if method == "DELETE" and action == "tag" and arg:
            return self._delete_tag(repo_id, arg, token)
        if method == "POST" and action == "branch" and arg:
            return self._create_branch(repo_id, arg, _json(body), token)
        raise HubProblem(404, f"Not found: {method} /api/models/{repo_id}/{'/'.join(rest)}")

    # access control

    def _readable(self, repo_id: str, token: _Token | None) -> Repo:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._owns(repo_id, token)):
            # like the Hub: anonymous gets 401, others 404, both RepoNotFound
            raise HubProblem(401 if token is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _owns(self, repo_id: str, token: _Token | None) -> bool:
        return token is not None and repo_id.split("/")[0] in (token.user, *self.hub.orgs)

    def _writable(self, repo_id: str, token: _Token | None) -> Repo:
        if token is None:
            raise HubProblem(401, "You must be authenticated to write to a repository")
        repo = self._readable(repo_id, token)
        if token.role != "write" or not self._owns(repo_id, token):
            raise HubProblem(
                403,
                f"You don't have the rights to write to {repo_id}: your token is {token.role}-only"
                if token.role != "write"
                else f"You don't have the rights to write to {repo_id}",
            )
        return repo

    # endpoints

    def _whoami(self, token: _Token | None) -> int:
        if token is None:
            raise HubProblem(401, "Invalid credentials in Authorization header")
        orgs = [{"type": "org", "name": o, "fullname": o, "roleInOrg": "admin"} for o in self.hub.orgs]
        return self._send_json(
            200,
            {
                "type": "user",
                "id": hashlib.sha1(token.user.encode()).hexdigest()[:24],
                "name": token.user,
                "fullname": token.user,
                "email": f"{token.user}@example.invalid",
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "orgs": orgs,
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "test", "role": token.role, "createdAt": _now()},
                },
            },
        )

    def _create_repo(self, data: dict[str, Any], token: _Token | None) -> int:
        if token is None:
            raise HubProblem(401, "You must be authenticated to create a repository")
        name, namespace = data.get("name"), data.get("organization") or token.user
        if data.get("type", "model") not in (None, "model"):
            raise HubProblem(400, "This test server only hosts model repositories")
        if not isinstance(name, str) or not REPO_PART.match(name) or not REPO_PART.match(namespace):
            raise HubProblem(400, f"Invalid repo name: {namespace}/{name}")
        repo_id = f"{namespace}/{name}"
        if token.role != "write" or namespace not in (token.user, *self.hub.orgs):
            raise HubProblem(
                403, f'You don\'t have the rights to create a model under the namespace "{namespace}"'
            )
        url = f"{self.hub.url}/{repo_id}"
        with self.hub._lock:
            if repo_id in self.hub.repos:
                raise HubProblem(409, "You already created this model repo", extra={"url": url})
            private = data.get("visibility") == "private" or bool(data.get("private"))
            repo = Repo(
                repo_id=repo_id,
                private=private,
                created_at=_now(),
                lfs=LfsStore(self.hub.lfs_dir / _safe(repo_id) if self.hub.lfs_dir else None),
            )
            blob = Blob(size=len(GITATTRIBUTES), oid=git_blob_sha1(GITATTRIBUTES), content=GITATTRIBUTES)
            first = repo.add_commit(None, {".gitattributes": blob}, "initial commit", "", token.user)
            repo.branches["main"] = first.sha
            self.hub.repos[repo_id] = repo
        return self._send_json(200, {"url": url, "name": repo_id, "id": uuid.uuid4().hex[:24]})

    def _delete_repo(self, data: dict[str, Any], token: _Token | None) -> int:
        namespace = data.get("organization") or (token.user if token else "")
        repo_id = f"{namespace}/{data.get('name')}"
        with self.hub._lock:
            self._writable(repo_id, token)
            del self.hub.repos[repo_id]
        return self._send(200, b"", content_type="text/plain")

    def _validate_yaml(self, data: dict[str, Any]) -> int:
        content = data.get("content", "")
        match = re.match(r"^\s*---\r?\n([\s\S]*?)\r?\n---[ \t]*(\r?\n|$)", content)
        if match:
            try:
                metadata = yaml.safe_load(match.group(1))
            except yaml.YAMLError as exc:
                message = f"Invalid YAML: {exc}".replace("\n", " ")
                return self._send_json(400, {"error": message, "errors": [{"message": message}]})
            if metadata is not None and not isinstance(metadata, dict):
                message = "YAML metadata must be a mapping"
                return self._send_json(400, {"error": message, "errors": [{"message": message}]})
        return self._send_json(200, {"errors": [], "warnings": []})

    def _model_info(
        self, repo_id: str, revision: str, query: dict[str, list[str]], token: _Token | None
    ) -> int:
        with self.hub._lock:
            repo = self._readable(repo_id, token)
            commit = self._commit_at(repo, revision)
        card = _card_data(commit)
        siblings: list[dict[str, Any]] = []
        for path, blob in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if query.get("blobs", ["false"])[0].lower() == "true":
                sibling.update(size=blob.size, blobId=blob.oid)
                if blob.lfs_sha256:
                    sibling["lfs"] = {
                        "size": blob.size,
                        "sha256": blob.lfs_sha256,
                        "pointerSize": blob.pointer_size,
                    }
            siblings.append(sibling)
        tags = list(card.get("tags") or []) if isinstance(card.get("tags"), list) else []
        return self._send_json(
            200,
            {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo_id.split("/")[0],
                "sha": commit.sha,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": tags,
                "pipeline_tag": card.get("pipeline_tag"),
                "library_name": card.get("library_name"),
                "cardData": card or None,
                "siblings": siblings,
                "spaces": [],
            },
        )

    def _commit_at(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubProblem(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    def _tree(
        self, repo_id: str, revision: str, path: str, query: dict[str, list[str]], token: _Token | None
    ) -> int:
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        with self.hub._lock:
            repo = self._readable(repo_id, token)
            commit = self._commit_at(repo, revision)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HubProblem(404, f'{path} does not exist on "{revision}"', "EntryNotFound")
        entries: dict[str, dict[str, Any]] = {}
        for file_path, blob in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            rel = file_path[len(prefix) :].split("/")
            for depth in range(1, len(rel)):  # folders on the way
                if not recursive and depth > 1:
                    break
                folder = prefix + "/".join(rel[:depth])
                entries.setdefault(
                    folder,
                    {
                        "type": "directory",
                        "oid": hashlib.sha1(folder.encode()).hexdigest(),
                        "size": 0,
                        "path": folder,
                    },
                )
            if recursive or len(rel) == 1:
                entry: dict[str, Any] = {
                    "type": "file",
                    "oid": blob.oid,
                    "size": blob.size,
                    "path": file_path,
                }
                if blob.lfs_sha256:
                    entry["lfs"] = {
                        "oid": blob.lfs_sha256,
                        "size": blob.size,
                        "pointerSize": blob.pointer_size,
                    }
                entries[file_path] = entry
        return self._send_json(200, [entries[k] for k in sorted(entries)])

    def _refs(self, repo_id: str, query: dict[str, list[str]], token: _Token | None) -> int:
        with self.hub._lock:
            repo = self._readable(repo_id, token)
            branches = [
                {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                for n, s in sorted(repo.branches.items())
            ]
            tags = [
                {"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in sorted(repo.tags.items())
            ]
        payload: dict[str, Any] = {"branches": branches, "converts": [], "tags": tags}
        if query.get("include_prs"):
            payload["pullRequests"] = []
        return self._send_json(200, payload)

    def _commits(self, repo_id: str, revision: str, token: _Token | None) -> int:
        with self.hub._lock:
            repo = self._readable(repo_id, token)
            commit: Commit | None = self._commit_at(repo, revision)
            out = []
            while commit is not None:
                out.append(
                    {
                        "id": commit.sha,
                        "title": commit.title,
                        "message": commit.message,
                        "authors": [{"user": commit.author}],
                        "date": commit.date,
                    }
                )
                commit = repo.commits.get(commit.parent) if commit.parent else None
        return self._send_json(200, out)

    def _auth_check(self, repo_id: str, *, write: bool, token: _Token | None) -> int:
        with self.hub._lock:
            if write:
                self._writable(repo_id, token)
            else:
                self._readable(repo_id, token)
        return self._send_json(200, {"success": True})

    def _preupload(self, repo_id: str, revision: str, data: dict[str, Any], token: _Token | None) -> int:
        with self.hub._lock:
            repo = self._writable(repo_id, token)
            commit = self._commit_at(repo, revision)
        files = []
        for item in data.get("files", []):
            path, size = item["path"], int(item["size"])
            sample = base64.b64decode(item.get("sample", ""))
            lfs = size > self.hub.regular_max_bytes or path.lower().endswith(LFS_SUFFIXES) or b"\0" in sample
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.lfs_sha256 if existing.lfs_sha256 else existing.oid
            files.append(
                {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
            )
        return self._send_json(200, {"files": files, "commitOid": commit.sha})

    def _lfs_batch(self, repo_id: str, data: dict[str, Any], token: _Token | None) -> int:
        with self.hub._lock:
            repo = self._writable(repo_id, token)
            if data.get("operation") != "upload":
                raise HubProblem(400, "Only the upload operation is supported")
            objects = []
            for obj in data.get("objects", []):
                oid, size = str(obj["oid"]), int(obj["size"])
                entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
                if oid not in repo.lfs:
                    upload_id = secrets.token_urlsafe(16)
                    self.hub._uploads[upload_id] = (repo_id, oid, size)
                    entry["actions"] = {
                        "upload": {"href": f"{self.hub.url}/__lfs/upload/{upload_id}", "header": {}},
                        "verify": {"href": f"{self.hub.url}/__lfs/verify/{repo_id}", "header": {}},
                    }
                objects.append(entry)
        return self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_upload(self, upload_id: str, body: bytes | SpooledBody) -> int:
        """A single-part LFS PUT: kept when its size and sha256 are the ones the batch announced."""
        with self.hub._lock:
            target = self.hub._uploads.get(upload_id)
        if target is None:
            raise HubProblem(403, "Unknown or expired upload URL")
        repo_id, oid, size = target
        digest = body.sha256 if isinstance(body, SpooledBody) else hashlib.sha256(body).hexdigest()
        if len(body) != size or digest != oid:
            raise HubProblem(400, f"Uploaded content does not match oid {oid} / size {size}")
        with self.hub._lock:
            self.hub.lfs_bytes_received += len(body)
            self.hub._uploads.pop(upload_id, None)
            repo = self.hub.repos.get(repo_id)
            if repo is not None:
                if isinstance(body, SpooledBody):
                    repo.lfs.adopt(oid, body)
                else:
                    repo.lfs[oid] = body
        # S3 answers a single PUT with an ETag; the client reads it only for multipart uploads
        return self._send(200, b"", headers={"ETag": f'"{oid[:32]}"'}, content_type="text/plain")

    def _lfs_endpoint(self, parts: list[str], body: bytes | SpooledBody) -> int:
        if parts[0] == "upload" and len(parts) == 2 and self.command == "PUT":
            return self._lfs_upload(parts[1], body)
        if parts[0] == "verify" and len(parts) == 3 and self.command == "POST":
            data = _json(body)
            with self.hub._lock:
                repo = self.hub.repos.get(f"{parts[1]}/{parts[2]}")
                oid = str(data.get("oid"))
                found = repo is not None and oid in repo.lfs and repo.lfs.size(oid) == data.get("size")
            if not found:
                raise HubProblem(404, f"Object {data.get('oid')} not found")
            return self._send_json(200, {"success": True})
        raise HubProblem(404, "Not found")

    def _commit(
        self, repo_id: str, revision: str, body: bytes, query: dict[str, list[str]], token: _Token | None
    ) -> int:
        if query.get("create_pr"):
            raise HubProblem(400, "This test server does not support pull requests")
        try:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise HubProblem(400, f"Invalid NDJSON payload: {exc}") from exc
        if not lines or lines[0].get("key") != "header":
            raise HubProblem(400, "The first line of a commit payload must be the header")
        header = lines[0]["value"]
        with self.hub._lock:
            repo = self._writable(repo_id, token)
            if revision not in repo.branches:
                raise HubProblem(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.commits[repo.branches[revision]]
            parent = header.get("parentCommit")
            if parent and parent != head.sha:
                raise HubProblem(
                    412,
                    f"A commit has happened since. Please refresh and try again. ({parent} is not {head.sha})",
                )
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                path = value.get("path", "")
                if not path or path.startswith("/") or ".." in path.split("/"):
                    raise HubProblem(400, f"Invalid path: {path!r}")
                if key == "file":
                    try:
                        content = (
                            base64.b64decode(value["content"], validate=True)
                            if value.get("encoding") == "base64"
                            else str(value["content"]).encode()
                        )
                    except (binascii.Error, KeyError) as exc:
                        raise HubProblem(400, f"Invalid content for {path}") from exc
                    files[path] = Blob(size=len(content), oid=git_blob_sha1(content), content=content)
                elif key == "lfsFile":
                    oid = value.get("oid")
                    if oid not in repo.lfs:
                        raise HubProblem(
                            422,
                            f"Your push was rejected because an LFS pointer pointed to a file that does not exist: {path}",
                        )
                    size = repo.lfs.size(oid)
                    pointer = LFS_POINTER.format(oid=oid, size=size).encode()
                    files[path] = Blob(size=size, oid=git_blob_sha1(pointer), lfs_sha256=oid)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubProblem(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubProblem(
                            404, f"A folder with this name doesn't exist: {path}", "EntryNotFound"
                        )
                    for p in doomed:
                        del files[p]
                else:
                    raise HubProblem(400, f"Unknown commit operation: {key!r}")
            if len(lines) == 1:
                raise HubProblem(400, "No files have been modified since last commit")
            commit = repo.add_commit(
                head.sha,
                files,
                header.get("summary") or "Update",
                header.get("description") or "",
                token.user if token else "anonymous",
            )
            repo.branches[revision] = commit.sha
        return self._send_json(
            200,
            {
                "success": True,
                "commitOid": commit.sha,
                "commitUrl": f"{self.hub.url}/{repo_id}/commit/{commit.sha}",
                "hookOutput": "",
            },
        )

    def _create_tag(self, repo_id: str, revision: str, data: dict[str, Any], token: _Token | None) -> int:
        tag = data.get("tag")
        with self.hub._lock:
            repo = self._writable(repo_id, token)
            commit = self._commit_at(repo, revision)
            if not isinstance(tag, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$", tag) or ".." in tag:
                raise HubProblem(400, f"Invalid tag name: {tag!r}")
            if tag in repo.tags or tag in repo.branches:
                raise HubProblem(409, f"Reference already exists: refs/tags/{tag}")
            repo.tags[tag] = commit.sha
        return self._send_json(200, {"success": True})

    def _delete_tag(self, repo_id: str, tag: str, token: _Token | None) -> int:
        with self.hub._lock:
            repo = self._writable(repo_id, token)
            if tag not in repo.tags:
                raise HubProblem(404, f"Invalid rev id: {tag}", "RevisionNotFound")
            del repo.tags[tag]
        return self._send_json(200, {"success": True})

    def _create_branch(self, repo_id: str, branch: str, data: dict[str, Any], token: _Token | None) -> int:
        with self.hub._lock:
            repo = self._writable(repo_id, token)
            commit = self._commit_at(repo, data.get("startingPoint") or "main")
            if branch in repo.branches or branch in repo.tags:
                raise HubProblem(409, f"Reference already exists: refs/heads/{branch}")
            repo.branches[branch] = commit.sha
        return self._send_json(200, {"success": True})

    def _resolve(self, repo_id: str, revision: str, path: str, token: _Token | None) -> int:
        with self.hub._lock:
            repo = self._readable(repo_id, token)
            commit = self._commit_at(repo, revision)
            blob = commit.files.get(path)
        if blob is None or (blob.lfs_sha256 is None and blob.content is None):
            raise HubProblem(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{blob.etag}"', "Accept-Ranges": "bytes"}
        if blob.lfs_sha256:
            headers["X-Linked-Etag"] = f'"{blob.etag}"'
            headers["X-Linked-Size"] = str(blob.size)
        status, size = 200, blob.size
        start, end = 0, size - 1
        range_header = self.headers.get("Range")
        match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header or "")
        if match and (match.group(1) or match.group(2)):
            start = int(match.group(1)) if match.group(1) else size - int(match.group(2))
            end = min(int(match.group(2)), size - 1) if match.group(1) and match.group(2) else size - 1
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            status = 206
        if self.command == "HEAD":
            data = b""
            headers["Content-Length"] = str(end + 1 - start)
        elif blob.lfs_sha256 is None:
            assert blob.content is not None
            data = blob.content[start : end + 1]
        else:
            with self.hub._lock:
                store = self.hub.repos[repo_id].lfs
            object_file = store.file(blob.lfs_sha256)
            if object_file is not None:  # a model's shards: from the file to the socket (sendfile)
                headers["Content-Length"] = str(end + 1 - start)
                self._send(status, b"", headers=headers, content_type="application/octet-stream")
                with object_file.open("rb") as handle:
                    self.connection.sendfile(handle, start, end + 1 - start)
                return status
            data = store.read(blob.lfs_sha256, start, end + 1)
        return self._send(status, data, headers=headers, content_type="application/octet-stream")


def _safe(repo_id: str) -> str:
    return repo_id.replace("/", "--")


def _json(body: bytes) -> dict[str, Any]:
    if not body:
        return {}
    try:
        value = json.loads(body)
    except json.JSONDecodeError as exc:
        raise HubProblem(400, f"Invalid JSON body: {exc}") from exc
    if not isinstance(value, dict):
        raise HubProblem(400, "JSON body must be an object")
    return value


def _card_data(commit: Commit) -> dict[str, Any]:
    """The README.md front matter of a commit, as the Hub exposes it in `cardData`."""
    readme = commit.files.get("README.md")
    if readme is None or readme.content is None:
        return {}
    match = re.match(
        r"^\s*---\r?\n([\s\S]*?)\r?\n---[ \t]*(\r?\n|$)", readme.content.decode("utf-8", "replace")
    )
    if not match:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def iter_repo_files(server: HubServer, repo_id: str, revision: str = "main") -> Iterator[tuple[str, bytes]]:
    """(path, content) of every file at `revision`, straight from storage (for assertions)."""
    with server._lock:
        repo = server.repos[repo_id]
        commit = repo.resolve(revision)
        if commit is None:
            raise KeyError(revision)
        items = [
            (p, b.content if b.lfs_sha256 is None else repo.lfs[b.lfs_sha256])
            for p, b in commit.files.items()
        ]
    for path, content in sorted(items):
        assert content is not None
        yield path, content


@dataclass
class SpooledBody:
    """A request body written to a file as it arrived, with its size and sha256."""

    path: Path
    size: int
    sha256: str

    def __len__(self) -> int:
        return self.size


def spool_request_body(handler: BaseHTTPRequestHandler, folder: Path) -> SpooledBody | None:
    """A Content-Length body copied to a new file under `folder` in 8 MB pieces, hashed on the way;
    None for a chunked body (read into memory as any other)."""
    length = handler.headers.get("Content-Length")
    if length is None or handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        return None
    remaining = int(length)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f".upload-{secrets.token_hex(8)}"
    sha = hashlib.sha256()
    with path.open("wb") as out:
        while remaining:
            piece = handler.rfile.read(min(remaining, 8 << 20))
            if not piece:
                break
            sha.update(piece)
            out.write(piece)
            remaining -= len(piece)
    return SpooledBody(path, int(length) - remaining, sha.hexdigest())


def read_request_body(handler: BaseHTTPRequestHandler) -> bytes:
    """The request body, whether sent with Content-Length or chunked (the Hub client does both)."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""
