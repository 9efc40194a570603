"""The streamed push's shard sink: a shard's base bytes download while it merges (a tensor is read only
once its bytes are on disk; a failed download reaches the merge; a failed merge stops the download); a
shard's upload overlaps the next shard's download; where the base bytes can be freed tensor by tensor it
overlaps the next merge too (and the next upload waits for it), else the next merge waits for it (so the
disk holds no more than two shards' worth either way); an upload's failure reaches the caller."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from deploygate.core.errors import HubError
from deploygate.core.model import StagedFile
from deploygate.core.shard_plan import ByteRange, OutputShard
from deploygate.service.ship import _Base, _HubSink
from tests.fakes import FakeHub


class OverlapHub(FakeHub):
    """stage(first shard) holds until the second shard's download has begun (or `hold` is set, when
    given), or 10 s."""

    def __init__(
        self, fail: str | None = None, *, punches: bool = False, hold: threading.Event | None = None
    ) -> None:
        super().__init__()
        self.events: list[str] = []
        self.second_download = threading.Event()
        self.hold = hold or self.second_download
        self.overlapped = False
        self.fail = fail
        self.punches = punches
        self.punched: list[ByteRange] = []

    def fetch_ranges(
        self, repo_id: str, revision: str, local_dir: Path, ranges: Any, arrived: Any = None
    ) -> int:
        self.events.append(f"fetch {len(self.events)}")
        if sum(e.startswith("fetch") for e in self.events) == 2:
            self.second_download.set()
        return 1

    def drop_ranges(self, local_dir: Path, ranges: Any) -> None:
        pass

    def punch(self, local_dir: Path, byte_range: ByteRange) -> bool:
        self.punched.append(byte_range)
        return self.punches

    def stage(self, repo_id: str, path_in_repo: str, local: Path, *, private: bool) -> StagedFile:
        if path_in_repo == "s1":
            self.overlapped = self.hold.wait(timeout=10)
        if path_in_repo == self.fail:
            raise HubError(f"Hub: could not pre-upload {path_in_repo} to {repo_id}: HTTP 403.")
        staged = super().stage(repo_id, path_in_repo, local, private=private)
        self.events.append(f"staged {path_in_repo}")
        return staged


def _sink(hub: FakeHub, tmp_path: Path) -> _HubSink:
    cfg: Any = SimpleNamespace(hf_model_id="org/model", hf_private=False)
    return _HubSink(hub, cfg, _Base(tmp_path / "base", "org/base", "0" * 40), None)


def _shard(tmp_path: Path, name: str) -> tuple[OutputShard, str]:
    path = tmp_path / name
    path.write_bytes(name.encode() * 100)
    return OutputShard(name, (), 200, ()), str(path)


def test_an_upload_overlaps_the_next_download_and_the_next_merge_waits_for_it(tmp_path: Path) -> None:
    hub = OverlapHub()
    sink = _sink(hub, tmp_path)
    try:
        first, first_path = _shard(tmp_path, "s1")
        sink.fetch(first, 1, 2)
        sink.consumed(ByteRange("w.safetensors", 0, 100))  # this disk cannot free it early
        sink.written(first, first_path, 1, 2)
        second, second_path = _shard(tmp_path, "s2")
        sink.fetch(second, 2, 2)  # downloads while s1 uploads; returns once s1 is up and deleted
        assert hub.overlapped, "the first shard's upload did not run while the second downloaded"
        assert hub.events[-1] == "staged s1" and not Path(first_path).exists()
        sink.written(second, second_path, 2, 2)
        sink.finish()
    finally:
        sink.close()
    assert set(sink.staged) == {"s1", "s2"} and not Path(second_path).exists()
    assert hub.staged[("org/model", "s1")] == b"s1" * 100


def test_a_failed_upload_reaches_the_caller(tmp_path: Path) -> None:
    hub = OverlapHub(fail="s2")
    hub.second_download.set()
    sink = _sink(hub, tmp_path)
    try:
        for number, name in enumerate(("s1", "s2"), 1):
            shard, path = _shard(tmp_path, name)
            sink.fetch(shard, number, 2)
            sink.written(shard, path, number, 2)
        with pytest.raises(HubError, match="pre-upload s2"):
            sink.finish()
    finally:
        sink.close()
    assert set(sink.staged) == {"s1"}


def test_where_base_bytes_are_freed_as_read_the_next_merge_overlaps_the_upload(tmp_path: Path) -> None:
    hold = threading.Event()
    hub = OverlapHub(punches=True, hold=hold)  # s1's upload waits until the test lets it go
    sink = _sink(hub, tmp_path)
    try:
        first, first_path = _shard(tmp_path, "s1")
        sink.fetch(first, 1, 2)
        sink.consumed(ByteRange("w.safetensors", 0, 100))
        sink.written(first, first_path, 1, 2)
        second, second_path = _shard(tmp_path, "s2")
        sink.fetch(second, 2, 2)  # returns with s1 still uploading: s2 merges meanwhile
        assert "staged s1" not in hub.events and Path(first_path).exists()
        threading.Timer(0.2, hold.set).start()
        sink.written(second, second_path, 2, 2)  # waits for s1 (two merged shards at most on disk)
        assert "staged s1" in hub.events and not Path(first_path).exists()
        sink.finish()
    finally:
        hold.set()
        sink.close()
    assert hub.overlapped and set(sink.staged) == {"s1", "s2"}
    assert hub.punched == [ByteRange("w.safetensors", 0, 100)]


class PieceHub(FakeHub):
    """fetch_ranges hands over each range in two halves, each only once the test lets it go, or fails
    after the first half (`fail`); records whether it was stopped."""

    def __init__(self, *, fail: bool = False) -> None:
        super().__init__()
        self.pieces = threading.Semaphore(0)
        self.fail = fail
        self.stopped: BaseException | None = None

    def fetch_ranges(
        self, repo_id: str, revision: str, local_dir: Path, ranges: Any, arrived: Any = None
    ) -> int:
        try:
            for byte_range in ranges:
                for end in ((byte_range.start + byte_range.end) // 2, byte_range.end):
                    assert self.pieces.acquire(timeout=10), "the test never let a piece go"
                    if self.fail and end == byte_range.end:
                        raise HubError(f"Hub: could not download {byte_range.file}: HTTP 500.")
                    arrived(byte_range, end)
        except Exception as exc:
            self.stopped = exc
            raise
        return sum(r.nbytes for r in ranges)

    def drop_ranges(self, local_dir: Path, ranges: Any) -> None:
        pass


def _waiting(sink: _HubSink, byte_range: ByteRange) -> tuple[threading.Thread, list[BaseException]]:
    """sink.ready(byte_range) on a thread of its own; its error, if any, in the list."""
    errors: list[BaseException] = []

    def ready() -> None:
        try:
            sink.ready(byte_range)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=ready, daemon=True)
    thread.start()
    return thread, errors


def test_a_tensor_is_read_only_once_its_base_bytes_have_arrived(tmp_path: Path) -> None:
    hub = PieceHub()
    sink = _sink(hub, tmp_path)
    needs = (ByteRange("a.safetensors", 100, 300), ByteRange("b.safetensors", 0, 50))
    try:
        sink.fetch(OutputShard("s1", (), 250, needs), 1, 1)
        early, _ = _waiting(sink, ByteRange("a.safetensors", 100, 200))
        late, _ = _waiting(sink, ByteRange("a.safetensors", 200, 300))
        other, _ = _waiting(sink, ByteRange("b.safetensors", 10, 50))
        early.join(0.2)
        assert early.is_alive(), "ready returned before any byte arrived"
        hub.pieces.release()  # a: 100-200 on disk
        early.join(5)
        late.join(0.2)
        assert not early.is_alive() and late.is_alive() and other.is_alive()
        hub.pieces.release(3)  # the rest of a, then b
        late.join(5)
        other.join(5)
        assert not late.is_alive() and not other.is_alive()
        sink.release(needs)  # the download is done: its bytes can be given back
    finally:
        sink.close()


def test_a_failed_download_reaches_the_merge_waiting_on_it(tmp_path: Path) -> None:
    hub = PieceHub(fail=True)
    sink = _sink(hub, tmp_path)
    try:
        sink.fetch(OutputShard("s1", (), 200, (ByteRange("a.safetensors", 0, 200),)), 1, 1)
        waiting, errors = _waiting(sink, ByteRange("a.safetensors", 150, 200))
        hub.pieces.release(2)
        waiting.join(5)
        assert not waiting.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], HubError) and "HTTP 500" in str(errors[0])
        with pytest.raises(HubError, match="HTTP 500"):
            sink.release((ByteRange("a.safetensors", 0, 200),))
    finally:
        sink.close()


def test_closing_the_sink_stops_a_download_still_running(tmp_path: Path) -> None:
    hub = PieceHub()
    sink = _sink(hub, tmp_path)
    sink.fetch(OutputShard("s1", (), 200, (ByteRange("a.safetensors", 0, 200),)), 1, 1)
    threading.Timer(0.2, hub.pieces.release, args=(2,)).start()
    sink.close()  # the merge failed: the download stops at its next piece instead of running on
    assert hub.stopped is not None and "a.safetensors" in str(hub.stopped)
