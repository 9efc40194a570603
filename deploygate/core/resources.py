"""What a deploy needs of this machine's disk and memory, from the base model's safetensors sizes.

Pure: file sizes, the largest tensor and the settings in; bytes needed and, given what the machine
has, the one-line refusal out. Read before any download (the Hub's file list and headers, or a
local folder's headers), so a runner that is too small is told so at once, not after an hour.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from deploygate.core.shard_plan import format_size

# torch, transformers and peft imported, the model built on the meta device: an allowance (the whole
# streamed deploy peaks at 0.80-1.03 GB RSS in bench/scale.py, merge buffers included)
RUNTIME_BYTES = 700_000_000


@dataclass(frozen=True)
class Needs:
    model_bytes: int  # the base's safetensors files
    disk_bytes: int  # peak, under the work folder
    memory_bytes: int  # peak resident
    how: str  # how the deploy runs, for the message


def deploy_needs(
    file_sizes: Mapping[str, int],
    largest_tensor: int,
    *,
    max_shard_bytes: int,
    streamed: bool,
    base_downloaded: bool,
    exported: bool,
) -> Needs:
    """A streamed push holds one output shard (at most the limit, or the largest tensor) and about
    as many base bytes; the folder path holds the whole merged model, the downloaded base beside it
    and the export's copy. Memory: two tensor buffers and a float32 workspace of the largest tensor
    (a bf16 weight and its float32 delta), plus the runtime; a merge that falls back to peft loads
    the whole model instead, which cannot be known before the adapter is read."""
    total = sum(file_sizes.values())
    if streamed:
        shard = min(total, max(max_shard_bytes, largest_tensor))
        disk, how = 2 * shard, f"streamed shard by shard ({format_size(shard)} shards)"
    else:
        disk = total * (1 + int(base_downloaded) + int(exported))
        how = "as a whole folder" + (" (downloaded base, merged model, export)" if exported else "")
    return Needs(total, disk, RUNTIME_BYTES + 4 * largest_tensor, how)


def shortfall(needs: Needs, free_disk: int, available_memory: int | None, work: str) -> str | None:
    """The one-line refusal when the machine clearly lacks what the deploy needs, else None."""
    model = format_size(needs.model_bytes)
    if needs.disk_bytes > free_disk:
        return (
            f"disk: a deploy of this {model} model {needs.how} needs about {format_size(needs.disk_bytes)} "
            f"under {work}, which has {format_size(free_disk)} free; free disk space, point TMPDIR at a larger "
            "disk, or set max-shard-size lower"
        )
    if available_memory is not None and needs.memory_bytes > available_memory:
        return (
            f"memory: merging this {model} model needs about {format_size(needs.memory_bytes)}, and "
            f"{format_size(available_memory)} is available; use a runner with more memory, or set merge: false "
            "to push the adapter alone"
        )
    return None


def describe(needs: Needs, free_disk: int, available_memory: int | None, work: str) -> str:
    """One line for doctor: what is needed and what there is."""
    memory = format_size(available_memory) if available_memory is not None else "unknown"
    return (
        f"a {format_size(needs.model_bytes)} base {needs.how}: about {format_size(needs.disk_bytes)} of disk "
        f"({format_size(free_disk)} free under {work}) and {format_size(needs.memory_bytes)} of memory "
        f"({memory} available)"
    )
