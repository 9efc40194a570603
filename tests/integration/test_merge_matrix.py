"""The merge matrix (tests/merge_matrix.py) in the suite, and docs/merge-support.md checked against it.

Every cell merges a real peft adapter into a tiny random model with deploygate and with peft itself: it must
be identical bit for bit (streamed or through the peft fallback) or refused in one line; never different,
never a crash. A fast subset runs by default: every LoRA configuration on Llama, and on the other
architectures the cells that showed the failures of issue #10. The whole matrix (16 architectures x 22
configurations x bf16/fp16/fp32) is marked slow, one test per architecture; each cell's outcome must be
the one docs/merge-support.md shows, and the page must show every cell (regenerate it, with its table of
reasons, by running the module).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from tests import merge_matrix as mm

DOC = Path(__file__).resolve().parents[2] / "docs" / "merge-support.md"
REGENERATE = "python -m tests.merge_matrix --write docs/merge-support.md"

# (architecture, dtype) -> the configurations run in the default suite.
FAST: dict[tuple[str, str], tuple[str, ...]] = {
    ("llama", "bf16"): mm.CASE_NAMES,
    # 1. raw PiSSA/OLoRA merge into the residual base peft rebuilds; converted ones stream.
    ("qwen2", "fp16"): ("pissa-raw", "olora-raw", "pissa-converted", "rslora"),
    # 2. encoder-decoders load with their seq2seq class, never as a decoder-only causal LM.
    ("bart", "fp32"): ("default", "modules_to_save", "lm_head-no-embedding-save"),
    ("t5", "bf16"): ("default", "dora"),
    # 3. tied embeddings: a stored lm_head.weight, and lm_head LoRA saved without the embedding layers.
    ("llama-tied", "bf16"): ("default", "lm_head-no-embedding-save", "lm_head", "modules_to_save"),
    ("gemma", "fp32"): ("lm_head-no-embedding-save", "trainable-tokens"),
    # 4. T5's _keep_in_fp32_modules (wo) in an fp16 model.
    ("t5", "fp16"): ("all-linear", "patterns"),
    # 5. MoE target_parameters (all-linear on Mixtral) reach the fallback.
    ("mixtral", "bf16"): ("all-linear", "default"),
    # Conv1D (GPT-2) and fused projections (Phi-3, Falcon).
    ("gpt2", "fp16"): ("all-linear", "bias-all"),
    ("phi3", "bf16"): ("default",),
    ("falcon", "fp32"): ("all-linear",),
}


def _check(cells: list[mm.Cell], documented: dict[tuple[str, str, str], str]) -> None:
    failed = [c for c in cells if not c.ok]
    assert failed == [], "\n".join(f"{c.arch} {c.dtype} {c.case}: {c.outcome}: {c.detail}" for c in failed)
    disagree = [
        f"{c.arch} {c.dtype} {c.case}: {mm.SHORT[c.outcome]}, the page says {documented.get((c.case, c.arch, c.dtype))}"
        for c in cells
        if documented.get((c.case, c.arch, c.dtype)) != mm.SHORT[c.outcome]
    ]
    assert disagree == [], f"docs/merge-support.md is out of date ({REGENERATE}): " + "; ".join(disagree)


@pytest.fixture(scope="module")
def documented() -> dict[tuple[str, str, str], str]:
    return mm.documented_outcomes(DOC.read_text(encoding="utf-8"))


@pytest.mark.parametrize(("arch", "dtype"), list(FAST), ids=[f"{a}-{d}" for a, d in FAST])
def test_fast_cells_are_identical_to_peft_or_refused(
    tmp_path: Path, documented: dict[tuple[str, str, str], str], arch: str, dtype: str
) -> None:
    cells = mm.run_matrix(tmp_path, [arch], FAST[(arch, dtype)], [dtype])
    _check(cells, documented)


@pytest.mark.slow
@pytest.mark.parametrize("arch", mm.ARCH_NAMES)
def test_the_whole_matrix_is_identical_to_peft_or_refused_and_documented(
    tmp_path: Path, documented: dict[tuple[str, str, str], str], arch: str
) -> None:
    """One architecture's row of the whole matrix (every configuration x bf16/fp16/fp32): one test per
    architecture, so that a parallel run spreads them."""
    cells = mm.run_matrix(tmp_path, [arch])
    assert len(cells) == len(mm.CASE_NAMES) * len(mm.DTYPES)
    _check(cells, documented)


def test_the_page_documents_every_cell_of_the_matrix(documented: dict[tuple[str, str, str], str]) -> None:
    every = {(case, arch, dtype) for case in mm.CASE_NAMES for arch in mm.ARCH_NAMES for dtype in mm.DTYPES}
    assert set(documented) == every, f"docs/merge-support.md is out of date: run {REGENERATE}"
