"""The Hub folder gets one tokenizer whole: the fine-tune's replaces the one the merge copied."""

from __future__ import annotations

from pathlib import Path

from deploygate.service.ship import _use_fine_tune_tokenizer


def _write(folder: Path, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)


def test_the_run_tokenizer_replaces_the_base_one_and_leaves_no_base_file(tmp_path: Path) -> None:
    stage, adapter, run = tmp_path / "stage", tmp_path / "run" / "model", tmp_path / "run"
    # what the merge copied from the base: a slow and a fast tokenizer and the base's special tokens
    _write(stage, {"config.json": "{}", "tokenizer.model": "base", "tokenizer.json": "base",
                   "special_tokens_map.json": "base"})  # fmt: skip
    _write(adapter, {"adapter_config.json": "{}"})
    _write(run / "tokenizer", {"tokenizer.json": "tuned", "tokenizer_config.json": "tuned"})
    _use_fine_tune_tokenizer(stage, adapter, run)
    assert sorted(p.name for p in stage.iterdir()) == [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
    ]
    assert {(stage / n).read_text() for n in ("tokenizer.json", "tokenizer_config.json")} == {"tuned"}


def test_without_a_fine_tune_tokenizer_the_merge_one_stays(tmp_path: Path) -> None:
    stage, adapter = tmp_path / "stage", tmp_path / "adapter"
    _write(stage, {"tokenizer.model": "base", "tokenizer.json": "base"})
    _write(adapter, {"adapter_config.json": "{}"})
    _use_fine_tune_tokenizer(stage, adapter, tmp_path / "nothing")
    assert {p.name: p.read_text() for p in stage.iterdir()} == {
        "tokenizer.model": "base",
        "tokenizer.json": "base",
    }
