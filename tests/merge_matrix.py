"""The merge matrix: tiny random models of every architecture users fine-tune x every LoRA configuration peft
saves x bf16/fp16/fp32, each merged by deploygate and by peft itself, compared bit for bit.

Models are built from configs here (hidden 64, 2 layers, random weights; nothing is downloaded), once per
architecture and dtype. Adapters are real: `get_peft_model`, every adapter weight perturbed (so lora_B is not
zero and every trained part shows in the merge), then `save_pretrained`. The reference is peft's own
`merge_and_unload` + `save_pretrained` on the model class the architecture declares, written here without any
deploygate code. A cell ends one of three ways:

- `exact`: deploygate streamed the merge and every tensor equals peft's, byte for byte;
- `fallback`: deploygate merged with peft (a warning says why) and every tensor equals peft's;
- `refused`: deploygate raised a one-line DeployGateError saying why and what to do.

Anything else (a tensor that differs, an extra or missing tensor, another exception) is a failure.

`python -m tests.merge_matrix --write docs/merge-support.md` runs the whole matrix and writes the reference
page from its results; tests/integration/test_merge_matrix.py checks that page against the matrix.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from deploygate.adapters.lora_merge import _quiet  # silences peft's and transformers' logs, warnings, bars

VOCAB = 128
IDS = {"vocab_size": VOCAB, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 3}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class Arch:
    """One architecture: how to build its config, and the module names LoRA configurations refer to."""

    name: str
    build_config: Callable[[], Any]
    default_targets: tuple[str, ...]  # peft's own default for the model type (phi3 has none: the usual pick)
    seq2seq: bool = False
    store_tied_lm_head: bool = (
        False  # write lm_head.weight beside the tied embedding, as older checkpoints did
    )


def _decoder(**extra: Any) -> dict[str, Any]:
    return {
        "hidden_size": 64,
        "intermediate_size": 96,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        **IDS,
        **extra,
    }


def architectures() -> dict[str, Arch]:
    import transformers as tf

    archs = [
        Arch("llama", lambda: tf.LlamaConfig(**_decoder()), ("q_proj", "v_proj")),
        Arch(
            "llama-tied",
            lambda: tf.LlamaConfig(**_decoder(tie_word_embeddings=True)),
            ("q_proj", "v_proj"),
            store_tied_lm_head=True,
        ),
        Arch("mistral", lambda: tf.MistralConfig(**_decoder()), ("q_proj", "v_proj")),
        Arch("qwen2", lambda: tf.Qwen2Config(**_decoder()), ("q_proj", "v_proj")),
        Arch("qwen3", lambda: tf.Qwen3Config(**_decoder(head_dim=16)), ("q_proj", "v_proj")),
        Arch("gemma", lambda: tf.GemmaConfig(**_decoder(head_dim=16)), ("q_proj", "v_proj")),
        Arch("gemma2", lambda: tf.Gemma2Config(**_decoder(head_dim=16)), ("q_proj", "v_proj")),
        Arch("phi3", lambda: tf.Phi3Config(**_decoder()), ("qkv_proj", "o_proj")),
        Arch(
            "gpt2",
            lambda: tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64, **IDS),
            ("c_attn",),
        ),
        Arch(
            "gpt_neox",
            lambda: tf.GPTNeoXConfig(
                hidden_size=64,
                intermediate_size=96,
                num_hidden_layers=2,
                num_attention_heads=4,
                max_position_embeddings=64,
                **IDS,
            ),
            ("query_key_value",),
        ),
        Arch(
            "falcon",
            lambda: tf.FalconConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, **IDS),
            ("query_key_value",),
        ),
        Arch(
            "opt",
            lambda: tf.OPTConfig(
                hidden_size=64,
                ffn_dim=96,
                num_hidden_layers=2,
                num_attention_heads=4,
                word_embed_proj_dim=64,
                max_position_embeddings=64,
                **IDS,
            ),
            ("q_proj", "v_proj"),
        ),
        Arch(
            "bloom",
            lambda: tf.BloomConfig(hidden_size=64, n_layer=2, n_head=4, **IDS),
            ("query_key_value",),
        ),
        Arch(
            "mixtral",
            lambda: tf.MixtralConfig(**_decoder(num_local_experts=4, num_experts_per_tok=2)),
            ("q_proj", "v_proj"),
        ),
        Arch(
            "t5",
            lambda: tf.T5Config(
                d_model=64,
                d_ff=96,
                d_kv=16,
                num_layers=2,
                num_decoder_layers=2,
                num_heads=4,
                decoder_start_token_id=3,
                **IDS,
            ),
            ("q", "v"),
            seq2seq=True,
        ),
        Arch(
            "bart",
            lambda: tf.BartConfig(
                d_model=64,
                encoder_ffn_dim=96,
                decoder_ffn_dim=96,
                encoder_layers=2,
                decoder_layers=2,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
                max_position_embeddings=64,
                decoder_start_token_id=2,
                forced_eos_token_id=2,
                **IDS,
            ),
            ("q_proj", "v_proj"),
            seq2seq=True,
        ),
    ]
    return {a.name: a for a in archs}


ARCH_NAMES = (
    "llama", "llama-tied", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt2", "gpt_neox",
    "falcon", "opt", "bloom", "mixtral", "t5", "bart",
)  # fmt: skip


# --- the LoRA configurations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ModuleNames:
    """Names a LoRA configuration needs from one built model."""

    targets: tuple[str, ...]
    input_embedding: str
    output_embedding: str


@dataclass(frozen=True)
class LoraCase:
    """One LoRA configuration: LoraConfig arguments (from the model's names), how it was saved, what it shows."""

    name: str
    what: str
    options: Callable[[ModuleNames], dict[str, Any]]
    save: Mapping[str, Any] = field(default_factory=dict)
    convert: bool = False  # PiSSA/OLoRA: save with path_initial_model_for_weight_conversion


def _with_targets(names: ModuleNames, *extra: str) -> list[str]:
    return [*names.targets, *extra]


LORA_CASES: tuple[LoraCase, ...] = (
    LoraCase(
        "default",
        "peft's default targets for the model type (phi3 has none: `qkv_proj`, `o_proj`), r=8",
        lambda n: {"target_modules": None},
    ),
    LoraCase("all-linear", "`target_modules='all-linear'`", lambda n: {"target_modules": "all-linear"}),
    LoraCase("rslora", "`use_rslora`, r=4, alpha=7", lambda n: {"use_rslora": True, "r": 4, "lora_alpha": 7}),
    LoraCase(
        "patterns",
        "`rank_pattern` / `alpha_pattern`",
        lambda n: {
            "rank_pattern": {n.targets[0]: 4},
            "alpha_pattern": {rf".*\.1\..*{n.targets[-1]}": 3},
        },
    ),
    LoraCase("r1", "r=1, alpha=2", lambda n: {"r": 1, "lora_alpha": 2}),
    LoraCase("r64", "r=64, alpha=16", lambda n: {"r": 64, "lora_alpha": 16}),
    LoraCase("dropout", "`lora_dropout=0.1`", lambda n: {"lora_dropout": 0.1}),
    LoraCase("layers", "`layers_to_transform=[1]`", lambda n: {"layers_to_transform": [1]}),
    LoraCase(
        "pissa-raw", "`init_lora_weights='pissa'`, saved as trained", lambda n: {"init_lora_weights": "pissa"}
    ),
    LoraCase(
        "pissa-converted",
        "PiSSA saved with `path_initial_model_for_weight_conversion`",
        lambda n: {"init_lora_weights": "pissa"},
        convert=True,
    ),
    LoraCase(
        "olora-raw", "`init_lora_weights='olora'`, saved as trained", lambda n: {"init_lora_weights": "olora"}
    ),
    LoraCase(
        "olora-converted",
        "OLoRA saved with `path_initial_model_for_weight_conversion`",
        lambda n: {"init_lora_weights": "olora"},
        convert=True,
    ),
    LoraCase("gaussian", "`init_lora_weights='gaussian'`", lambda n: {"init_lora_weights": "gaussian"}),
    LoraCase("orthogonal", "`init_lora_weights='orthogonal'`", lambda n: {"init_lora_weights": "orthogonal"}),
    LoraCase("bias-lora_only", "`bias='lora_only'`", lambda n: {"bias": "lora_only"}),
    LoraCase("bias-all", "`bias='all'`", lambda n: {"bias": "all"}),
    LoraCase(
        "modules_to_save",
        "`modules_to_save=[<output embedding>]`",
        lambda n: {"modules_to_save": [n.output_embedding]},
    ),
    LoraCase("dora", "`use_dora`", lambda n: {"use_dora": True}),
    LoraCase(
        "embedding",
        "LoRA on the input embedding too",
        lambda n: {"target_modules": _with_targets(n, n.input_embedding)},
    ),
    LoraCase(
        "lm_head",
        "LoRA on the output embedding too (saved with peft's default `save_embedding_layers`)",
        lambda n: {"target_modules": _with_targets(n, n.output_embedding)},
    ),
    LoraCase(
        "lm_head-no-embedding-save",
        "LoRA on the output embedding, saved with `save_embedding_layers=False`",
        lambda n: {"target_modules": _with_targets(n, n.output_embedding)},
        save={"save_embedding_layers": False},
    ),
    LoraCase(
        "trainable-tokens",
        "`trainable_token_indices=[4, 5, 6]`",
        lambda n: {"trainable_token_indices": [4, 5, 6]},
    ),
)
CASE_NAMES = tuple(c.name for c in LORA_CASES)
_CASES = {c.name: c for c in LORA_CASES}


# --- building models and adapters ----------------------------------------------------------------------


def model_class(arch: Arch) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    return AutoModelForSeq2SeqLM if arch.seq2seq else AutoModelForCausalLM


@dataclass
class BuiltBase:
    arch: Arch
    dtype: str
    path: Path
    model: Any  # the in-memory model, copied for each adapter (get_peft_model changes it)
    names: ModuleNames


def build_base(arch: Arch, dtype: str, root: Path, *, seed: int = 0) -> BuiltBase:
    """A random model of `arch` saved with save_pretrained in `dtype` (one safetensors file)."""
    config = arch.build_config()
    torch.manual_seed(seed)
    model = model_class(arch).from_config(config).to(DTYPES[dtype]).eval()
    path = root / f"{arch.name}-{dtype}"
    with _quiet():
        model.save_pretrained(path)
    if arch.store_tied_lm_head:
        _store_tied_lm_head(path, model)
    inputs = _module_name(model, model.get_input_embeddings())
    outputs = _module_name(model, model.get_output_embeddings())
    return BuiltBase(arch, dtype, path, model, ModuleNames(arch.default_targets, inputs, outputs))


def _module_name(model: Any, module: Any) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _store_tied_lm_head(path: Path, model: Any) -> None:
    """Add lm_head.weight (equal to the embedding) to the checkpoint, as transformers 4.x wrote tied models."""
    from safetensors.torch import load_file, save_file

    file = path / "model.safetensors"
    tensors = load_file(file)
    assert "lm_head.weight" not in tensors, "transformers saved the tied lm_head already"
    tensors["lm_head.weight"] = model.get_output_embeddings().weight.detach().clone()
    save_file(tensors, file, metadata={"format": "pt"})


def make_adapter(base: BuiltBase, case: LoraCase, out: Path, *, seed: int = 1) -> Path:
    """A real peft adapter of `case` for `base`, every trained weight perturbed, saved by save_pretrained."""
    from peft import LoraConfig, get_peft_model
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    options = {"target_modules": list(base.names.targets), **case.options(base.names)}
    if options["target_modules"] is None and base.model.config.model_type not in PEFT_DEFAULTS:
        options["target_modules"] = list(base.names.targets)  # peft has no default for it (phi3)
    task = "SEQ_2_SEQ_LM" if base.arch.seq2seq else "CAUSAL_LM"
    config = LoraConfig(task_type=task, **options)
    model = copy.deepcopy(base.model)
    # peft draws lora_A's init from the global generator: seeded, a cell gets the same adapter whatever ran
    # before it in this process (a bf16 MoE cell can otherwise land on a routing flip now and then).
    torch.manual_seed(seed)
    with _quiet():
        peft_model = get_peft_model(model, config)
        if case.convert:
            initial = out.parent / f"{out.name}-initial"
            peft_model.peft_config["default"].init_lora_weights = True
            peft_model.save_pretrained(initial)
            peft_model.peft_config["default"].init_lora_weights = options["init_lora_weights"]
        _perturb(peft_model, seed)
        save = dict(case.save)
        if case.convert:
            save["path_initial_model_for_weight_conversion"] = str(initial)
        peft_model.save_pretrained(out, **save)
    config_path = out / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = str(base.path)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True))
    return out


_TRAINED = re.compile(r"lora_|modules_to_save|trainable_tokens|\.bias$")


def _perturb(peft_model: Any, seed: int) -> None:
    """Move every trainable tensor away from its init, as training would (lora_B starts at zero)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if not param.requires_grad or not _TRAINED.search(name):
                continue
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32) * 0.05
            param.copy_((param.float() + noise).to(param.dtype))


# --- the reference: peft's own merge ----------------------------------------------------------------------


def peft_reference(base: BuiltBase, adapter: Path, out: Path) -> str | None:
    """peft's merge_and_unload + save_pretrained into `out`; the error text when peft itself cannot merge."""
    from peft import PeftModel

    try:
        with _quiet():
            model = model_class(base.arch).from_pretrained(base.path, dtype="auto")
            merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
            merged.save_pretrained(out)
    except Exception as exc:  # peft's own failure is a result here, not a test error
        return f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return None


def raw_tensors(directory: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """name -> (dtype, shape, bytes) of every tensor in the safetensors files of `directory`."""
    out: dict[str, tuple[str, tuple[int, ...], bytes]] = {}
    for path in sorted(directory.glob("*.safetensors")):
        data = path.read_bytes()
        length = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + length])
        header.pop("__metadata__", None)
        for name, entry in header.items():
            begin, end = entry["data_offsets"]
            out[name] = (entry["dtype"], tuple(entry["shape"]), data[8 + length + begin : 8 + length + end])
    return out


def differences(ours: Path, reference: Path) -> list[str]:
    """What differs between two merged checkpoints: names, dtypes, shapes, bytes (empty when identical)."""
    a, b = raw_tensors(ours), raw_tensors(reference)
    found = [f"only in deploygate's: {n}" for n in sorted(a.keys() - b.keys())]
    found += [f"only in peft's: {n}" for n in sorted(b.keys() - a.keys())]
    for name in sorted(a.keys() & b.keys()):
        if a[name][:2] != b[name][:2]:
            found.append(f"{name}: {a[name][0]}{list(a[name][1])} vs peft's {b[name][0]}{list(b[name][1])}")
        elif a[name][2] != b[name][2]:
            found.append(f"{name}: values differ")
    return found


# --- one cell ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    arch: str
    case: str
    dtype: str
    outcome: str  # exact | fallback | refused | n/a (peft cannot save such an adapter) | MISMATCH | CRASH
    detail: str = ""  # the refusal or fallback reason, or what went wrong
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.outcome in ("exact", "fallback", "refused", "n/a")


def run_cell(base: BuiltBase, case: LoraCase, work: Path) -> Cell:
    from deploygate.adapters.lora_merge import merge
    from deploygate.core.errors import DeployGateError

    start = time.perf_counter()
    arch, dtype = base.arch.name, base.dtype

    def cell(outcome: str, detail: str = "") -> Cell:
        return Cell(arch, case.name, dtype, outcome, detail, time.perf_counter() - start)

    work.mkdir(parents=True)
    try:
        adapter = make_adapter(base, case, work / "adapter")
    except Exception as exc:  # peft cannot build this adapter: nothing to merge
        return cell("n/a", f"peft cannot save it: {type(exc).__name__}: {exc}".splitlines()[0][:200])
    peft_error = peft_reference(base, adapter, work / "peft")
    try:
        with _quiet():
            report = merge(base.path, adapter, work / "deploygate", fallback="peft")
    except DeployGateError as exc:
        message = str(exc)
        if "\n" in message:
            return cell("CRASH", f"refusal is not one line: {message!r}")
        return cell("refused", message)
    except Exception as exc:  # a crash is a failed cell, reported with the others
        return cell("CRASH", f"{type(exc).__name__}: {exc}".splitlines()[0])
    if peft_error is not None:
        return cell("MISMATCH", f"deploygate merged ({report.method}) what peft cannot: {peft_error}")
    found = differences(work / "deploygate", work / "peft")
    if found:
        return cell("MISMATCH", f"{report.method}: {'; '.join(found[:4])}")
    if report.method == "streaming":
        return cell("exact")
    reasons = [
        w.removeprefix("merged with peft: ") for w in report.warnings if w.startswith("merged with peft: ")
    ]
    return cell("fallback", "; ".join(reasons))


def run_matrix(
    root: Path,
    archs: Iterable[str] = ARCH_NAMES,
    cases: Iterable[str] = CASE_NAMES,
    dtypes: Iterable[str] = tuple(DTYPES),
    progress: Callable[[Cell], None] | None = None,
) -> list[Cell]:
    """Every cell of archs x cases x dtypes; each base model is built once.

    Torch runs on one thread here: these matrices are tiny, and on a busy 2-core runner every parallel
    kernel waits for a descheduled thread. deploygate and the reference run under the same setting, so
    the comparison is the same.
    """
    known = architectures()
    cells: list[Cell] = []
    case_list = [_CASES[c] for c in cases]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for arch_name in archs:
            for dtype in dtypes:
                base = build_base(known[arch_name], dtype, root / "bases")
                for case in case_list:
                    result = run_cell(base, case, root / "cells" / f"{arch_name}-{dtype}-{case.name}")
                    cells.append(result)
                    if progress is not None:
                        progress(result)
    finally:
        torch.set_num_threads(threads)
    return cells


# --- the reference page -----------------------------------------------------------------------------------

DOC_START = "<!-- merge-matrix:start -->"
DOC_END = "<!-- merge-matrix:end -->"
SHORT = {
    "exact": "exact", "fallback": "peft", "refused": "refused", "n/a": "n/a", "MISMATCH": "FAIL", "CRASH": "FAIL",
}  # fmt: skip


def outcome_table(cells: Sequence[Cell]) -> str:
    """The generated part of docs/merge-support.md: one row per LoRA configuration, one column per architecture.

    A cell shows its outcome when all dtypes agree, else each dtype's (e.g. `exact; fp16: peft`)."""
    archs = list(dict.fromkeys(c.arch for c in cells))
    cases = list(dict.fromkeys(c.case for c in cells))
    by_key = {(c.arch, c.case, c.dtype): c for c in cells}
    dtypes = list(dict.fromkeys(c.dtype for c in cells))
    lines = ["| configuration | " + " | ".join(archs) + " |", "|---|" + "---|" * len(archs)]
    for case in cases:
        row = []
        for arch in archs:
            outcomes = {
                d: SHORT[by_key[(arch, case, d)].outcome] for d in dtypes if (arch, case, d) in by_key
            }
            common = max(set(outcomes.values()), key=list(outcomes.values()).count)
            odd = [f"{d}: {o}" for d, o in outcomes.items() if o != common]
            row.append("; ".join([common, *odd]))
        lines.append(f"| `{case}` | " + " | ".join(row) + " |")
    return "\n".join(lines)


def documented_outcomes(page: str) -> dict[tuple[str, str, str], str]:
    """(configuration, architecture, dtype) -> exact | peft | refused, read back from the page's outcome table."""
    body = page[page.index(DOC_START) : page.index(DOC_END)]
    rows = [line for line in body.splitlines() if line.startswith("|")]
    archs = [a.strip() for a in rows[0].strip("|").split("|")[1:]]
    found: dict[tuple[str, str, str], str] = {}
    for line in rows[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        if not cells[0].startswith("`"):
            break  # the reasons table
        case = cells[0].strip("`")
        for arch, text in zip(archs, cells[1:], strict=True):
            common, *odd = text.split("; ")
            for dtype in DTYPES:
                found[(case, arch, dtype)] = common
            for item in odd:
                dtype, outcome = item.split(": ")
                found[(case, arch, dtype)] = outcome
    return found


def reasons_table(cells: Sequence[Cell]) -> str:
    """Why each configuration goes to peft or is refused, in short, with the architectures it happens on."""
    lines = ["| configuration | what it is | when not exact: why (where) |", "|---|---|---|"]
    for case in dict.fromkeys(c.case for c in cells):
        mine = [c for c in cells if c.case == case and c.outcome in ("fallback", "refused", "n/a")]
        where: dict[str, dict[str, list[str]]] = {}
        for c in mine:
            label = f"{SHORT[c.outcome]}: {short_reason(c.detail)}"
            where.setdefault(label, {}).setdefault(c.arch, []).append(c.dtype)
        said = [f"{label} ({', '.join(_where(archs))})" for label, archs in where.items()]
        lines.append(f"| `{case}` | {_CASES[case].what} | {'<br>'.join(said) or '—'} |")
    return "\n".join(lines)


def _where(archs: Mapping[str, list[str]]) -> Iterator[str]:
    for arch, dtypes in archs.items():
        yield arch if len(dtypes) == len(DTYPES) else f"{arch} {'/'.join(dtypes)}"


# What deploygate said, in a few words; the full one-line message is in the cell's detail.
_REASONS: tuple[tuple[str, str], ...] = (
    ("peft cannot save it", "peft itself cannot save this adapter"),
    ("which the base model ties to", "it trains a tied weight: merged, the change would reach both"),
    ("the checkpoint stores both", "the checkpoint stores a tied lm_head.weight beside the embedding"),
    ("peft could not merge it", "peft itself fails to load or merge it"),
    ("residual base", "peft rebuilds the residual base at load"),
    ("LoRA on embeddings", "LoRA on an embedding"),
    ("not lora_A/lora_B", "the adapter file holds base layers (save_embedding_layers)"),
    ("matches no base tensor", "the LoRA target's weight is not stored under its name (tied, or renamed)"),
    ("target_parameters=", "target_parameters: LoRA on MoE expert parameters"),
)


def short_reason(detail: str) -> str:
    for phrase, label in _REASONS:
        if phrase in detail:
            return label
    return detail.split(":")[0].replace("|", "\\|")


def totals(cells: Sequence[Cell]) -> str:
    counts: dict[str, int] = {}
    for c in cells:
        counts[c.outcome] = counts.get(c.outcome, 0) + 1
    return ", ".join(f"{n} {o}" for o, n in sorted(counts.items()))


def render_generated(cells: Sequence[Cell]) -> str:
    return "\n\n".join([DOC_START, outcome_table(cells), reasons_table(cells), DOC_END])


def replace_generated(page: str, generated: str) -> str:
    start, end = page.index(DOC_START), page.index(DOC_END) + len(DOC_END)
    return page[:start] + generated + page[end:]


def main(argv: list[str] | None = None) -> int:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--write", type=Path, help="rewrite the generated part of this page (docs/merge-support.md)"
    )
    parser.add_argument("--arch", action="append", help="only these architectures (repeatable)")
    parser.add_argument("--case", action="append", help="only these LoRA configurations (repeatable)")
    parser.add_argument("--dtype", action="append", help="only these dtypes (repeatable)")
    args = parser.parse_args(argv)

    def show(cell: Cell) -> None:
        flag = "" if cell.ok else "  <-- FAILED"
        print(
            f"{cell.arch:11} {cell.dtype} {cell.case:26} {cell.outcome:8} {cell.seconds:5.2f}s {cell.detail[:150]}{flag}"
        )

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dg-merge-matrix-") as tmp:
        cells = run_matrix(
            Path(tmp),
            args.arch or ARCH_NAMES,
            args.case or CASE_NAMES,
            args.dtype or tuple(DTYPES),
            progress=show,
        )
    print(f"{len(cells)} cells in {time.perf_counter() - start:.0f} s: {totals(cells)}")
    if args.write:
        page = args.write.read_text(encoding="utf-8")
        args.write.write_text(replace_generated(page, render_generated(cells)), encoding="utf-8")
        print(f"wrote {args.write}")
    return 0 if all(c.ok for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
