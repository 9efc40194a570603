"""A local stand-in for the three GitHub REST endpoints the PR comment uses, on 127.0.0.1.

GET/POST /repos/{owner}/{repo}/issues/{number}/comments and PATCH /repos/{owner}/{repo}/issues/comments/{id},
with GitHub's JSON shapes, `Link: rel="next"` pagination, Bearer auth, and the refusals a fork or a
read-only token get (403 "Resource not accessible by integration"). It records every request so
tests can assert what the action did. Test support only: no other endpoint, no persistence.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class Comment:
    id: int
    body: str
    user: str = "github-actions[bot]"


@dataclass
class GitHubState:
    token: str = "ghs_test-token"
    read_only_repos: set[str] = field(default_factory=set)  # writes get 403 (a fork's token)
    comments: dict[tuple[str, int], list[Comment]] = field(default_factory=dict)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, auth header
    next_id: int = 1000

    def seed(self, repo: str, number: int, bodies: list[str], user: str = "someone") -> None:
        for body in bodies:
            self.next_id += 1
            self.comments.setdefault((repo, number), []).append(Comment(self.next_id, body, user))

    def bodies(self, repo: str, number: int) -> list[str]:
        return [c.body for c in self.comments.get((repo, number), [])]


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _route(self) -> tuple[list[str], dict[str, list[str]]] | None:
        state = self.server.state
        auth = self.headers.get("Authorization")
        url = urlsplit(self.path)
        state.requests.append((self.command, url.path, auth))
        if auth != f"Bearer {state.token}":
            self._send(401, {"message": "Bad credentials"})
            return None
        return url.path.strip("/").split("/"), parse_qs(url.query)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        data = json.loads(self.rfile.read(length) or b"{}")
        return data if isinstance(data, dict) else {}

    def _comment_json(self, repo: str, number: int, c: Comment) -> dict[str, Any]:
        base = f"http://{self.headers.get('Host')}"
        return {
            "id": c.id,
            "body": c.body,
            "user": {"login": c.user, "type": "Bot" if c.user.endswith("[bot]") else "User"},
            "url": f"{base}/repos/{repo}/issues/comments/{c.id}",
            "html_url": f"https://github.example/{repo}/pull/{number}#issuecomment-{c.id}",
        }

    def do_GET(self) -> None:
        routed = self._route()
        if routed is None:
            return
        parts, query = routed
        if len(parts) != 6 or parts[0] != "repos" or parts[3] != "issues" or parts[5] != "comments":
            self._send(404, {"message": "Not Found"})
            return
        repo, number = f"{parts[1]}/{parts[2]}", int(parts[4])
        per_page = min(int(query.get("per_page", ["30"])[0]), self.server.max_per_page)
        page = int(query.get("page", ["1"])[0])
        items = self.server.state.comments.get((repo, number), [])
        chunk = items[(page - 1) * per_page : page * per_page]
        headers = {}
        if page * per_page < len(items):
            host = self.headers.get("Host")
            headers["Link"] = (
                f'<http://{host}/repos/{repo}/issues/{number}/comments?per_page={per_page}&page={page + 1}>; rel="next"'
            )
        self._send(200, [self._comment_json(repo, number, c) for c in chunk], headers)

    def do_POST(self) -> None:
        routed = self._route()
        if routed is None:
            return
        parts, _ = routed
        if len(parts) != 6 or parts[0] != "repos" or parts[3] != "issues" or parts[5] != "comments":
            self._send(404, {"message": "Not Found"})
            return
        repo, number = f"{parts[1]}/{parts[2]}", int(parts[4])
        state = self.server.state
        if repo in state.read_only_repos:
            self._send(403, {"message": "Resource not accessible by integration"})
            return
        body = self._body().get("body")
        if not isinstance(body, str) or not body:
            self._send(422, {"message": "Validation Failed"})
            return
        state.next_id += 1
        comment = Comment(state.next_id, body)
        state.comments.setdefault((repo, number), []).append(comment)
        self._send(201, self._comment_json(repo, number, comment))

    def do_PATCH(self) -> None:
        routed = self._route()
        if routed is None:
            return
        parts, _ = routed
        if len(parts) != 6 or parts[0] != "repos" or parts[3] != "issues" or parts[4] != "comments":
            self._send(404, {"message": "Not Found"})
            return
        repo, comment_id = f"{parts[1]}/{parts[2]}", int(parts[5])
        state = self.server.state
        if repo in state.read_only_repos:
            self._send(403, {"message": "Resource not accessible by integration"})
            return
        for (r, number), comments in state.comments.items():
            for comment in comments:
                if r == repo and comment.id == comment_id:
                    comment.body = str(self._body().get("body", ""))
                    self._send(200, self._comment_json(repo, number, comment))
                    return
        self._send(404, {"message": "Not Found"})


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: GitHubState, max_per_page: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state
        self.max_per_page = max_per_page


@dataclass
class GitHubApi:
    url: str
    state: GitHubState


@contextlib.contextmanager
def running_github_api() -> Iterator[GitHubApi]:
    """A fresh fake GitHub API. Pages hold at most 5 comments, so pagination is exercised."""
    state = GitHubState()
    server = _Server(state, max_per_page=5)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield GitHubApi(url=f"http://127.0.0.1:{server.server_address[1]}", state=state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def github_api() -> Iterator[GitHubApi]:
    with running_github_api() as api:
        yield api
