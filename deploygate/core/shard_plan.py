"""The output shard plan of a merge: which output shard holds which tensors, and which base bytes it needs.

Pure: tensors (names, sizes, where their bytes sit in the base files) and a size limit in, a plan out.
The merge writes the shards in this order; the ship fetches, for each shard, only the base byte ranges
the plan names, and may drop them once the shard is written (no later shard needs the same bytes: each
tensor is in exactly one output shard). The output's sharding is independent of the base's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

SINGLE_NAME = "model.safetensors"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
MIN_SHARD_BYTES = 1_000  # below this a "shard" is a header; a typo (5 instead of 5GB) rather than a wish


def parse_size(text: str) -> int | None:
    """Bytes of '2GB', '500MB', '1.5GiB', '4096' (decimal units as transformers' max_shard_size); None
    when the text is not a size."""
    match = _SIZE.match(text)
    if match is None or match[2].upper() not in _UNITS:
        return None
    return int(float(match[1]) * _UNITS[match[2].upper()])


def format_size(nbytes: float) -> str:
    """'1.9 GB', '512.0 MB', '12.0 KB' (decimal units, one decimal)."""
    for unit in ("TB", "GB", "MB", "KB"):
        if abs(nbytes) >= _UNITS[unit]:
            return f"{nbytes / _UNITS[unit]:.1f} {unit}"
    return f"{int(nbytes)} B"


@dataclass(frozen=True)
class PlannedTensor:
    """One output tensor: its size as written, and where its source bytes are in the base."""

    name: str
    nbytes: int  # as written (after a cast, the output dtype's size)
    source_file: str  # the base file's name, relative to the base folder
    source_start: int  # absolute offset of its bytes in that file
    source_nbytes: int


@dataclass(frozen=True)
class ByteRange:
    """Bytes [start, end) of one base file."""

    file: str
    start: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class OutputShard:
    name: str
    tensors: tuple[str, ...]  # in base file order
    nbytes: int  # tensor bytes (the file adds its header)
    needs: tuple[ByteRange, ...]  # the base bytes its tensors are made from, merged per file

    @property
    def needed_bytes(self) -> int:
        return sum(r.nbytes for r in self.needs)


@dataclass(frozen=True)
class ShardPlan:
    shards: tuple[OutputShard, ...]

    @property
    def total_bytes(self) -> int:
        return sum(s.nbytes for s in self.shards)

    def weight_map(self) -> dict[str, str]:
        """tensor name -> shard file, as model.safetensors.index.json has it (sorted by name)."""
        return dict(sorted((t, s.name) for s in self.shards for t in s.tensors))

    def largest_shard(self) -> int:
        return max((s.nbytes for s in self.shards), default=0)

    def largest_need(self) -> int:
        return max((s.needed_bytes for s in self.shards), default=0)


def shard_names(count: int) -> list[str]:
    """transformers' names: model.safetensors alone, else model-00001-of-0000N.safetensors."""
    if count == 1:
        return [SINGLE_NAME]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


def plan_shards(tensors: Sequence[PlannedTensor], max_shard_bytes: int) -> ShardPlan:
    """Greedy in the given order, like transformers' save_pretrained: a shard takes tensors until the
    next would pass `max_shard_bytes`; a tensor larger than the limit gets a shard of its own."""
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    groups: list[list[PlannedTensor]] = [[]]
    size = 0
    for tensor in tensors:
        if groups[-1] and size + tensor.nbytes > max_shard_bytes:
            groups.append([])
            size = 0
        groups[-1].append(tensor)
        size += tensor.nbytes
    names = shard_names(len(groups))
    return ShardPlan(
        tuple(
            OutputShard(
                name, tuple(t.name for t in group), sum(t.nbytes for t in group), _needed_ranges(group)
            )
            for name, group in zip(names, groups, strict=True)
        )
    )


def _needed_ranges(tensors: Iterable[PlannedTensor]) -> tuple[ByteRange, ...]:
    """The source bytes of `tensors`, touching ranges of one file merged, in (file, offset) order."""
    by_file: dict[str, list[tuple[int, int]]] = {}
    for t in tensors:
        by_file.setdefault(t.source_file, []).append((t.source_start, t.source_start + t.source_nbytes))
    ranges: list[ByteRange] = []
    for file, spans in by_file.items():
        spans.sort()
        start, end = spans[0]
        for begin, stop in spans[1:]:
            if begin > end:
                ranges.append(ByteRange(file, start, end))
                start = begin
            end = max(end, stop)
        ranges.append(ByteRange(file, start, end))
    return tuple(ranges)


def alone(ranges: Sequence[ByteRange]) -> list[bool]:
    """For each range, whether it shares no byte with any other range of the list (of the same file).

    A merge may give back one tensor's base bytes as soon as it has read them only when no other
    tensor is made of any of them; safetensors files never overlap tensors, so this is all True unless a
    file does, and then those tensors wait for the shard's `release`."""
    shared = [False] * len(ranges)
    by_file: dict[str, list[int]] = {}
    for i, r in enumerate(ranges):
        by_file.setdefault(r.file, []).append(i)
    for indices in by_file.values():
        indices.sort(key=lambda i: (ranges[i].start, ranges[i].end))
        reach, holder = -1, -1  # the furthest end so far, and whose it is
        for i in indices:
            if ranges[i].nbytes and ranges[i].start < reach:
                shared[i] = shared[holder] = True
            if ranges[i].end > reach:
                reach, holder = ranges[i].end, i
    return [not s for s in shared]


class ShardSink(Protocol):
    """Where a merge that streams shard by shard gets its base bytes and hands its shards.

    The merge calls `fetch` before it writes a shard (the sink starts getting the shard's ranges into
    the base files, at their offsets), `ready` before it reads one tensor's base bytes (it returns once
    they are readable, or raises why they never will be), `consumed` (from its writer thread) once it
    has read one tensor's base bytes and no other tensor of the shard needs them, `written` once the
    shard's file is complete (the sink may move or delete it), and `release` with the shard's ranges
    once no later shard needs them."""

    def fetch(self, shard: OutputShard, index: int, total: int) -> None: ...
    def ready(self, byte_range: ByteRange) -> None: ...
    def consumed(self, byte_range: ByteRange) -> None: ...
    def written(self, shard: OutputShard, path: str, index: int, total: int) -> None: ...
    def release(self, ranges: Sequence[ByteRange]) -> None: ...
