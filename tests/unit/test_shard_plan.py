"""The output shard plan, the size setting and the resource estimate: pure values in, values out."""

from __future__ import annotations

import pytest

from deploygate.core.errors import ConfigError
from deploygate.core.resources import deploy_needs, shortfall
from deploygate.core.settings import SETTINGS_BY_NAME, parse_value
from deploygate.core.shard_plan import ByteRange, PlannedTensor, alone, format_size, parse_size, plan_shards


def _tensors(*spec: tuple[str, int, str, int]) -> list[PlannedTensor]:
    return [PlannedTensor(name, size, file, start, size) for name, size, file, start in spec]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2GB", 2_000_000_000),
        ("500MB", 500_000_000),
        ("5 GB", 5_000_000_000),
        ("1.5GiB", 3 * 2**29),
        ("4096", 4096),
    ],
)
def test_sizes_are_read_as_transformers_writes_them(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "2 XB", "-1GB", "two"])
def test_a_size_that_is_none_is_refused_naming_the_value(text: str) -> None:
    assert parse_size(text) is None
    with pytest.raises(ConfigError, match=r"max-shard-size.*not a shard size; give a size such as 500MB"):
        parse_value(SETTINGS_BY_NAME["max-shard-size"], text or "0", "--max-shard-size")


def test_the_default_shard_size_is_2gb() -> None:
    setting = SETTINGS_BY_NAME["max-shard-size"]
    assert parse_value(setting, setting.default, "default") == 2_000_000_000
    assert format_size(2_000_000_000) == "2.0 GB" and format_size(512) == "512 B"


def test_shards_fill_greedily_and_a_large_tensor_gets_its_own() -> None:
    tensors = _tensors(
        ("a", 40, "b1", 100), ("b", 40, "b1", 140), ("c", 150, "b2", 100), ("d", 10, "b2", 250)
    )
    plan = plan_shards(tensors, 100)
    assert [s.tensors for s in plan.shards] == [("a", "b"), ("c",), ("d",)]
    assert [s.name for s in plan.shards] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert plan.total_bytes == 240 and plan.largest_shard() == 150
    assert plan.weight_map() == {
        "a": "model-00001-of-00003.safetensors",
        "b": "model-00001-of-00003.safetensors",
        "c": "model-00002-of-00003.safetensors",
        "d": "model-00003-of-00003.safetensors",
    }


def test_each_shard_names_the_base_bytes_it_needs_merged_per_file() -> None:
    # the output shard crosses a base file boundary: two ranges, touching tensors merged into one
    tensors = _tensors(("a", 10, "b1", 100), ("b", 10, "b1", 110), ("c", 10, "b2", 8), ("d", 10, "b2", 30))
    (shard,) = plan_shards(tensors, 1000).shards
    assert shard.name == "model.safetensors"
    assert shard.needs == (ByteRange("b1", 100, 120), ByteRange("b2", 8, 18), ByteRange("b2", 30, 40))
    assert shard.needed_bytes == 40


def test_no_two_shards_need_the_same_bytes() -> None:
    tensors = _tensors(*((f"t{i}", 10, f"f{i // 7}", 8 + 10 * (i % 7)) for i in range(30)))
    plan = plan_shards(tensors, 25)
    spans = [(r.file, b) for s in plan.shards for r in s.needs for b in range(r.start, r.end)]
    assert len(spans) == len(set(spans)) == 300
    assert all(s.nbytes <= 25 for s in plan.shards)


def test_a_streamed_deploy_needs_two_shards_of_disk_the_folder_path_the_whole_model() -> None:
    files = {f"model-{i}.safetensors": 4_500_000_000 for i in range(3)}
    streamed = deploy_needs(
        files, 262_000_000, max_shard_bytes=2_000_000_000, streamed=True, base_downloaded=True, exported=False
    )
    assert streamed.model_bytes == 13_500_000_000 and streamed.disk_bytes == 4_000_000_000
    assert streamed.memory_bytes < 2_000_000_000  # an upper bound: the largest tensor merged in float32
    whole = deploy_needs(
        files, 262_000_000, max_shard_bytes=2_000_000_000, streamed=False, base_downloaded=True, exported=True
    )
    assert whole.disk_bytes == 3 * 13_500_000_000


def test_a_machine_that_is_too_small_is_refused_in_one_line() -> None:
    needs = deploy_needs(
        {"m.safetensors": 10**10},
        10**8,
        max_shard_bytes=2 * 10**9,
        streamed=True,
        base_downloaded=True,
        exported=False,
    )
    assert shortfall(needs, 5 * 10**9, 8 * 10**9, "/tmp") is None
    disk = shortfall(needs, 3 * 10**9, 8 * 10**9, "/tmp")
    assert (
        disk is not None
        and disk.startswith("disk: ")
        and "4.0 GB under /tmp" in disk
        and "3.0 GB free" in disk
    )
    assert "max-shard-size" in disk and "\n" not in disk
    memory = shortfall(needs, 5 * 10**9, 10**8, "/tmp")
    assert memory is not None and memory.startswith("memory: ") and "merge: false" in memory
    assert shortfall(needs, 5 * 10**9, None, "/tmp") is None  # memory unknown: not refused


def test_a_tensors_base_bytes_are_alone_unless_another_tensor_shares_one_of_them() -> None:
    a, b, c = ByteRange("a", 0, 10), ByteRange("a", 10, 20), ByteRange("b", 0, 10)
    assert alone([a, b, c]) == [True, True, True]  # touching is not sharing; another file is another file
    assert alone([b, a, ByteRange("a", 5, 6)]) == [True, False, False]  # in write order, not file order
    nested, inner, later = ByteRange("a", 0, 100), ByteRange("a", 40, 50), ByteRange("a", 60, 70)
    assert alone([nested, inner, later]) == [False, False, False]
    assert alone([ByteRange("a", 0, 10), ByteRange("a", 0, 10)]) == [False, False]
    assert alone([]) == []
