"""Merge a LoRA adapter into its base model by streaming safetensors tensor by tensor, matching peft bit for bit.

Adapter layer (files in, files out, all paths given as arguments). It must not import torch, safetensors,
transformers or peft at module level (a run that decides "skip" never pays for them), and it must never
produce a silently wrong model. Every adapter_config.json field is judged on purpose (`_FIELD_RULES`): the
streaming merge reproduces it, peft merges it (the fallback), or the adapter is refused with the reason and
the fix. While it streams, transformers and peft are asked what they would do with this base and adapter
(on the meta device: names, dtypes, ties, which layers get which delta), and what was streamed must be
that; after every merge the written model is checked against what peft's merge would write, and a
fallback merge must also reproduce the adapter model's logits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import struct
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from deploygate.core import strictjson
from deploygate.core.errors import AdapterError, DeployGateError, MergeError, ModelSourceError, first_line
from deploygate.core.shard_plan import (
    ByteRange,
    OutputShard,
    PlannedTensor,
    ShardPlan,
    ShardSink,
    alone,
    plan_shards,
)
from deploygate.core.tokenizer import TOKENIZER_FILES, has_tokenizer

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_SAFETENSORS = "adapter_model.safetensors"
ADAPTER_BIN = "adapter_model.bin"
SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
MODEL_FILES = ("config.json", "generation_config.json")

# transformers 4.x wrote 5 GB shards; 2 GB keeps a streamed push's disk (about two shards) small.
DEFAULT_MAX_SHARD_BYTES = 2_000_000_000

ProgressCallback = Callable[[int, int, str], None]
Fallback = Literal["peft", "error"]


@dataclass(frozen=True)
class AdapterInfo:
    """What adapter_config.json says, read without importing peft. Defaults are LoraConfig's."""

    adapter_dir: Path
    peft_type: str
    task_type: str | None
    base_model_name_or_path: str | None
    r: int
    lora_alpha: float
    target_modules: tuple[str, ...] | str | None
    use_rslora: bool
    use_dora: bool
    rank_pattern: Mapping[str, int]
    alpha_pattern: Mapping[str, float]
    fan_in_fan_out: bool
    modules_to_save: tuple[str, ...] | None
    bias: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    def rank_and_alpha(self, module: str) -> tuple[int, float]:
        """r and alpha for one module, resolved as peft's `get_pattern_key` does.

        `module` is the module's name in the base model (`model.layers.0.self_attn.q_proj`). Each pattern
        key is a regex matched against the end of the name on a dot boundary; the first match in the
        file's order wins.
        """
        return (
            self.rank_pattern.get(_pattern_key(self.rank_pattern, module), self.r),
            self.alpha_pattern.get(_pattern_key(self.alpha_pattern, module), self.lora_alpha),
        )

    def scaling(self, module: str) -> float:
        """alpha / r, or alpha / sqrt(r) with rsLoRA: the factor peft multiplies B @ A by."""
        r, alpha = self.rank_and_alpha(module)
        return alpha / math.sqrt(r) if self.use_rslora else alpha / r


def _pattern_key(patterns: Iterable[str], module: str) -> str:
    # Same as peft.utils.other.get_pattern_key: returns the module itself when no key matches.
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


@dataclass(frozen=True)
class MergeReport:
    """What a merge wrote. `method` is how: streaming, peft (fallback/reference) or adapter-only."""

    method: Literal["streaming", "peft", "adapter-only"]
    tensors_total: int
    tensors_merged: int
    shards: tuple[str, ...]
    bytes_written: int
    warnings: tuple[str, ...] = ()


def inspect_adapter(adapter_dir: str | Path) -> AdapterInfo:
    """Read and validate `adapter_dir/adapter_config.json` (pure reading: no torch, no peft)."""
    adapter = Path(adapter_dir)
    fields = _ConfigFields(adapter / ADAPTER_CONFIG)
    raw = fields.raw
    peft_type = fields.text("peft_type", default="LORA") or "LORA"
    r = raw.get("r", 8)
    if not _is_number(r, integer=True) or r <= 0:
        raise fields.bad("r", "a positive integer")
    alpha = raw.get("lora_alpha", 8)
    if not _is_number(alpha, integer=False) or alpha <= 0:
        raise fields.bad("lora_alpha", "a positive number")
    target = raw.get("target_modules")
    if target is not None and not isinstance(target, str):
        if not isinstance(target, list) or not all(isinstance(t, str) for t in target):
            raise fields.bad("target_modules", "a list of module names, a regex string, or null")
        target = tuple(target)
    bias = fields.text("bias", default="none") or "none"
    if bias not in ("none", "all", "lora_only"):
        raise fields.bad("bias", "one of 'none', 'all', 'lora_only'")
    return AdapterInfo(
        adapter_dir=adapter,
        peft_type=peft_type,
        task_type=fields.text("task_type", default=None),
        base_model_name_or_path=fields.text("base_model_name_or_path", default=None),
        r=int(r),
        lora_alpha=alpha,
        target_modules=target,
        use_rslora=fields.flag("use_rslora"),
        use_dora=fields.flag("use_dora"),
        rank_pattern=fields.pattern("rank_pattern", int),
        alpha_pattern=fields.pattern("alpha_pattern", float),
        fan_in_fan_out=fields.flag("fan_in_fan_out"),
        modules_to_save=fields.names("modules_to_save"),
        bias=bias,
        raw=MappingProxyType(raw),
    )


class _ConfigFields:
    """adapter_config.json as read, and its fields checked one by one, each error naming the file,
    the key, the bad value and what it must be."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.is_file():
            raise AdapterError(
                f"{path}: not found; point the adapter at the directory peft's save_pretrained wrote "
                f"(it holds {ADAPTER_CONFIG} and {ADAPTER_SAFETENSORS})."
            )
        try:
            # a key given twice is an error, not the last one
            raw = strictjson.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise AdapterError(f"{path}: not valid JSON ({exc}); re-save the adapter with peft.") from exc
        if not isinstance(raw, dict):
            raise AdapterError(
                f"{path}: expected a JSON object, got {type(raw).__name__}; re-save the adapter with peft."
            )
        self.raw: dict[str, Any] = raw

    def bad(self, key: str, expected: str) -> AdapterError:
        return AdapterError(
            f"{self.path}: {key!r} must be {expected}, got {self.raw.get(key)!r}; "
            "fix it or re-save the adapter with peft."
        )

    def flag(self, key: str) -> bool:
        value = self.raw.get(key, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.bad(key, "true or false")
        return value

    def text(self, key: str, *, default: str | None) -> str | None:
        value = self.raw.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.bad(key, "a string")
        return value

    def names(self, key: str) -> tuple[str, ...] | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.bad(key, "a list of module names or null")
        return tuple(value)

    def pattern(self, key: str, kind: type) -> Mapping[str, Any]:
        value = self.raw.get(key) or {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and _is_number(v, integer=kind is int) and v > 0 for k, v in value.items()
        ):
            raise self.bad(
                key, f"an object of module pattern -> positive {'integer' if kind is int else 'number'}"
            )
        try:
            for k in value:
                re.compile(k)
        except re.error as exc:
            raise self.bad(key, f"an object whose keys are valid regular expressions ({exc})") from exc
        return MappingProxyType(dict(value))


def _is_number(value: object, *, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, int | float)


# --- adapter_config.json: what each field means for the merge --------------------------------------------
#
# Every LoraConfig field of peft 0.21 is listed here with what it does at load and merge time (peft's
# tuners/lora/{config,layer,model}.py) and what deploygate does about it: nothing (it does not change what
# the trained weights mean, or the streaming merge computes it with peft's own reading of it), merge with
# peft (the fallback), or refuse with the reason and the fix. A field this table does not know, whatever
# its value, goes to the fallback: peft knows what it means, this merge may not.


@dataclass(frozen=True)
class _Verdict:
    kind: Literal["fallback", "refuse"]
    text: str  # fallback: why peft merges it; refuse: why, then what to do


_Rule = Callable[[Any], "_Verdict | None"]
_CONVERT = (
    "convert the adapter with save_pretrained(path_initial_model_for_weight_conversion=...) as peft's guide "
    "shows, or set merge: false to push the adapter alone"
)
_ADAPTER_ONLY = "set merge: false to push the adapter alone"


def _is_set(value: Any) -> bool:
    return value not in (None, False, 0, "", [], {})


def _exact(value: Any) -> None:
    return None


def _fallback_when_set(key: str, why: str) -> _Rule:
    return lambda value: _Verdict("fallback", f"{key}={value!r}: {why}") if _is_set(value) else None


def _refuse_when_set(key: str, why: str, fix: str = _ADAPTER_ONLY) -> _Rule:
    return lambda value: _Verdict("refuse", f"{key}={value!r}: {why}; {fix}") if _is_set(value) else None


def _init_rule(value: Any) -> _Verdict | None:
    """init_lora_weights: at load peft runs the init again, then the saved lora_A/lora_B replace what it set.

    That is harmless for the schemes that only set lora_A/lora_B (True, False, gaussian, orthogonal, eva);
    the others also rewrite the base weight, or cannot be re-run at all.
    """
    key = "init_lora_weights"
    if value in (True, False) or value in ("gaussian", "orthogonal", "eva"):
        return None
    if value in ("pissa", "olora"):
        # Deterministic (full SVD / QR of the base weight): peft's load rebuilds the residual base
        # W - scaling * B0 @ A0 the adapter was trained against, and merges into it.
        return _Verdict(
            "fallback",
            f"{key}={value!r}: peft rebuilds the residual base the adapter was trained against when it loads "
            "it, and merges into that (converting the adapter avoids this step)",
        )
    if isinstance(value, str) and value.startswith("pissa_niter_"):
        return _Verdict(
            "refuse",
            f"{key}={value!r}: peft rebuilds the residual base of a raw fast-SVD PiSSA adapter with a randomised "
            f"SVD each time it loads it, so no merge reproduces the trained model; {_CONVERT}",
        )
    if value == "corda":
        return _Verdict(
            "refuse",
            f"{key}='corda': the residual base of a raw CorDA adapter needs the calibration statistics of "
            f"preprocess_corda, which peft cannot rebuild at load; {_CONVERT}",
        )
    if value == "lora_ga":
        return _Verdict(
            "refuse",
            f"{key}='lora_ga': peft loads a raw LoRA-GA adapter onto the original base, not the residual base it "
            f"was trained against; {_CONVERT}",
        )
    if value == "loftq":
        return _Verdict(
            "refuse",
            f"{key}='loftq': the adapter was trained against a LoftQ-quantized base, which peft re-quantizes at "
            "load; save the quantized base and an adapter with init_lora_weights=true as peft's LoftQ guide "
            f"shows and set base-model to that base, or {_ADAPTER_ONLY}",
        )
    return _Verdict("fallback", f"{key}={value!r} is a scheme this merge does not reproduce")


_PROMPT_LEARNING = frozenset(
    {"PROMPT_TUNING", "MULTITASK_PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "ADAPTION_PROMPT", "CPT"}
)
_GENERATIVE_TASKS = (None, "CAUSAL_LM", "SEQ_2_SEQ_LM")


def _task_rule(value: Any) -> _Verdict | None:
    if value in _GENERATIVE_TASKS:
        return None
    return _Verdict(
        "refuse",
        f"task_type={value!r}: deploygate merges and ships text-generation models (CAUSAL_LM, SEQ_2_SEQ_LM), "
        f"and a merged {value} model needs the task head the adapter trained; {_ADAPTER_ONLY}",
    )


_FIELD_RULES: Mapping[str, _Rule] = MappingProxyType(
    {
        # Bookkeeping: where the adapter came from, how it was trained; never what the weights mean.
        "peft_type": _exact,  # LORA here; other types are judged as a whole, see _config_verdicts
        "base_model_name_or_path": _exact,
        "revision": _exact,
        "peft_version": _exact,
        "auto_mapping": _exact,  # names the base class when task_type is null: used to pick it
        "inference_mode": _exact,
        "lora_dropout": _exact,  # training only (eval mode skips it)
        "runtime_config": _exact,  # never saved: runtime options
        "megatron_core": _exact,  # a module path, read only with megatron_config
        "qalora_group_size": _exact,  # read only with use_qalora
        # Read only by their init_lora_weights scheme, which is judged under that field.
        "loftq_config": _exact,
        "eva_config": _exact,
        "corda_config": _exact,
        "lora_ga_config": _exact,
        "task_type": _task_rule,
        "init_lora_weights": _init_rule,
        # What the streaming merge computes. Which modules are wrapped, with which r, scaling and
        # orientation, is asked from peft itself (it reads these on the base model, on the meta device).
        "r": _exact,
        "lora_alpha": _exact,
        "rank_pattern": _exact,
        "alpha_pattern": _exact,
        "use_rslora": _exact,
        "fan_in_fan_out": _exact,  # peft decides per layer: on for Conv1D, off for nn.Linear
        "target_modules": _exact,
        "exclude_modules": _exact,
        "layers_to_transform": _exact,
        "layers_pattern": _exact,
        # Merged by peft: each changes weights beyond W + scaling * B @ A.
        "bias": lambda v: (
            None
            if v in (None, "none")
            else _Verdict("fallback", f"bias={v!r}: the adapter carries trained base biases")
        ),
        "modules_to_save": _fallback_when_set(
            "modules_to_save", "whole modules are replaced by trained copies"
        ),
        "use_dora": _fallback_when_set(
            "use_dora", "DoRA rescales every merged weight by a learned magnitude"
        ),
        "lora_bias": _fallback_when_set("lora_bias", "lora_B has a bias that is added to the base bias"),
        "trainable_token_indices": _fallback_when_set(
            "trainable_token_indices", "trained rows of the embedding are written into it"
        ),
        "target_parameters": _fallback_when_set(
            "target_parameters", "LoRA on raw parameters (MoE experts) rather than on linear layers"
        ),
        "ensure_weight_tying": _fallback_when_set(
            "ensure_weight_tying", "adapters of tied layers are tied to each other"
        ),
        "use_qalora": _fallback_when_set("use_qalora", "QALoRA pools inputs before lora_A"),
        "velora_config": _fallback_when_set("velora_config", "a LoRA variant peft merges its own way"),
        "monteclora_config": _fallback_when_set(
            "monteclora_config", "a LoRA variant peft merges its own way"
        ),
        "use_bdlora": _fallback_when_set("use_bdlora", "block-diagonal LoRA factors"),
        "kasa_config": _fallback_when_set("kasa_config", "KaSA rewrites the base weight and adds lora_diag"),
        # Refused: no merged model can be what was trained (or peft cannot build it here).
        "layer_replication": _refuse_when_set(
            "layer_replication",
            "replicated layers share one base weight but each has its own adapter, so merging them into it "
            "cannot be right",
        ),
        "megatron_config": _refuse_when_set(
            "megatron_config", "Megatron tensor-parallel layers cannot be loaded or merged on this runner"
        ),
        "alora_invocation_tokens": _refuse_when_set(
            "alora_invocation_tokens",
            "Activated LoRA applies only after its invocation tokens; a merged model would apply it to every "
            "token (peft refuses to merge it too)",
        ),
        "arrow_config": _refuse_when_set(
            "arrow_config",
            "Arrow routes every token to its own mix of LoRA experts; there is no single merged model",
        ),
    }
)


def _config_verdicts(info: AdapterInfo) -> list[_Verdict]:
    """Every field of adapter_config.json that needs the fallback or a refusal (empty: streaming may merge)."""
    if info.peft_type in _PROMPT_LEARNING:
        return [
            _Verdict(
                "refuse",
                f"peft_type={info.peft_type!r}: prompt learning adds virtual tokens at run time, there are no "
                f"weights to merge; {_ADAPTER_ONLY}",
            )
        ]
    verdicts: list[_Verdict] = []
    task = _task_rule(info.task_type)
    if task is not None:
        verdicts.append(task)
    if info.peft_type != "LORA":
        # Another tuner (IA3, LoHa, OFT, ...): its fields are its own; peft knows how to merge it.
        return [*verdicts, _Verdict("fallback", f"peft_type={info.peft_type!r} is merged by peft")]
    for key, value in info.raw.items():
        rule = _FIELD_RULES.get(key)
        if rule is None:
            verdicts.append(_Verdict("fallback", f"{key}={value!r} is unknown to this merge"))
        elif key != "task_type" and (verdict := rule(value)) is not None:
            verdicts.append(verdict)
    return verdicts


def merge_refusal(info: AdapterInfo) -> str | None:
    """The one-line reason this adapter must not be merged at all (and what to do), or None.

    Read from adapter_config.json alone, so a caller can check it before it writes anything.
    """
    refused = [v.text for v in _config_verdicts(info) if v.kind == "refuse"]
    if not refused:
        return None
    return f"{info.adapter_dir / ADAPTER_CONFIG}: cannot merge: {'; also '.join(refused)}."


def _check_not_refused(info: AdapterInfo) -> list[str]:
    """Raise AdapterError for a refused adapter; else the fallback reasons its config gives."""
    refusal = merge_refusal(info)
    if refusal is not None:
        raise AdapterError(refusal)
    return [v.text for v in _config_verdicts(info)]


# --- safetensors files, read without torch -----------------------------------------------------------------

_DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_MERGEABLE_DTYPES = frozenset({"F16", "BF16", "F32", "F64"})
_MAX_HEADER_BYTES = 100_000_000  # safetensors' own limit


@dataclass(frozen=True)
class _Tensor:
    """One tensor inside a safetensors file: where its bytes are, and what they are."""

    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute offset in the file
    nbytes: int


def _read_header(path: Path, error: type[Exception]) -> dict[str, _Tensor]:
    """Parse a safetensors header into tensors in file order (only the header is read)."""
    try:
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise error(
                    f"{path}: not a safetensors file (shorter than 8 bytes); re-save it with safetensors."
                )
            (length,) = struct.unpack("<Q", prefix)
            if length > _MAX_HEADER_BYTES:
                raise error(
                    f"{path}: safetensors header of {length} bytes is implausible; the file is corrupt."
                )
            header = json.loads(f.read(length))
            file_size = os.fstat(f.fileno()).st_size
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: unreadable safetensors header ({exc}); re-save it with safetensors.") from exc
    if not isinstance(header, dict):
        raise error(f"{path}: safetensors header is not a JSON object; the file is corrupt.")
    header.pop("__metadata__", None)
    data_start = 8 + length
    tensors: list[_Tensor] = []
    for name, entry in header.items():
        try:
            dtype, shape = entry["dtype"], tuple(int(d) for d in entry["shape"])
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as exc:
            raise error(f"{path}: bad header entry for {name!r}: {entry!r}; the file is corrupt.") from exc
        expected = math.prod(shape) * _DTYPE_BYTES[dtype] if dtype in _DTYPE_BYTES else end - begin
        if end - begin != expected or begin < 0 or data_start + end > file_size:
            raise error(
                f"{path}: {name!r} has offsets {[begin, end]} that do not fit {dtype}{list(shape)}; the file is corrupt."
            )
        tensors.append(_Tensor(name, path, dtype, shape, data_start + begin, end - begin))
    tensors.sort(key=lambda t: t.start)
    return {t.name: t for t in tensors}


def _base_weight_files(base_dir: Path) -> list[Path] | None:
    """The base's safetensors files in index order, or None when its weights are in another format."""
    index = base_dir / SAFE_INDEX
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = list(dict.fromkeys(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ModelSourceError(
                f"{index}: unreadable index ({exc}); re-save the base model with save_pretrained."
            ) from exc
        files = [base_dir / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise ModelSourceError(
                f"{index}: names shards that are missing: {missing}; download the whole base model."
            )
        return files
    if (base_dir / SAFE_SINGLE).is_file():
        return [base_dir / SAFE_SINGLE]
    if any(base_dir.glob("*.bin")) or any(base_dir.glob("*.pt")) or any(base_dir.glob("*.pth")):
        return None
    raise ModelSourceError(
        f"{base_dir}: no model weights ({SAFE_INDEX}, {SAFE_SINGLE} or pytorch_model*.bin); "
        "point the base model at a directory written by save_pretrained."
    )


# --- the checkpoint and the adapter file, from their headers (no torch) --------------------------------------

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


@dataclass(frozen=True)
class _Files:
    """The base checkpoint's tensors and the adapter's LoRA pairs, as their headers describe them."""

    base_files: tuple[Path, ...]
    base: Mapping[str, _Tensor]  # every base tensor by name
    pairs: Mapping[str, tuple[_Tensor, _Tensor]]  # adapter module (base model name) -> (lora_A, lora_B)
    adapter_file: Path


def merge_problems(info: AdapterInfo, base_dir: str | Path) -> list[str]:
    """Reasons the streaming merge cannot reproduce peft exactly, from adapter_config.json and the headers of
    the safetensors files alone (no torch, no peft); empty when it may.

    The streaming merge then also asks transformers and peft what they make of the model (on the meta
    device) and may find more. Raises AdapterError for an adapter that must not be merged at all (see
    `merge_refusal`) or whose files contradict its config, ModelSourceError when the base has no weights.
    """
    return _read_files(info, Path(base_dir))[1]


def _read_files(info: AdapterInfo, base_dir: Path) -> tuple[_Files | None, list[str]]:
    base_files, adapter_file, problems = _format_problems(info, base_dir)
    if base_files is None or problems:
        # The config already sends it to peft: its tensors may be laid out in ways this merge does not
        # read (MoE target_parameters, DoRA magnitudes, ...), so they are not judged here.
        return None, problems
    base = _base_tensors(base_files)
    parts = _lora_parts(_read_header(adapter_file, AdapterError), problems)
    pairs: dict[str, tuple[_Tensor, _Tensor]] = {}
    for module, found in sorted(parts.items()):
        pair = _lora_pair(info, adapter_file, module, found, base, problems)
        if pair is not None:
            pairs[module] = pair
    files = _Files(tuple(base_files), MappingProxyType(base), MappingProxyType(pairs), adapter_file)
    return (None, problems) if problems else (files, [])


def _format_problems(info: AdapterInfo, base_dir: Path) -> tuple[list[Path] | None, Path, list[str]]:
    """(the base's safetensors files, the adapter's weights file, reasons to merge with peft) from the
    config and the file names; AdapterError when the adapter has no weights file at all."""
    problems = _check_not_refused(info)
    base_files = _base_weight_files(base_dir)
    if base_files is None:
        problems.append(f"base weights in {base_dir} are not safetensors (pickled .bin/.pt)")
    adapter_file = info.adapter_dir / ADAPTER_SAFETENSORS
    if not adapter_file.is_file():
        if (info.adapter_dir / ADAPTER_BIN).is_file():
            problems.append(f"adapter weights are {ADAPTER_BIN}, not safetensors")
        else:
            raise AdapterError(
                f"{info.adapter_dir}: no {ADAPTER_SAFETENSORS} (nor {ADAPTER_BIN}); point the adapter at "
                "the directory peft's save_pretrained wrote."
            )
    if sys.byteorder != "little":
        problems.append("this machine is big-endian; safetensors data is little-endian")
    return base_files, adapter_file, problems


def _base_tensors(base_files: Sequence[Path]) -> dict[str, _Tensor]:
    """Every tensor of the base checkpoint by name; MergeError when two files hold the same name."""
    base: dict[str, _Tensor] = {}
    for path in base_files:
        for name, tensor in _read_header(path, MergeError).items():
            if name in base:
                raise MergeError(
                    f"{path}: tensor {name!r} is also in {base[name].file.name}; the checkpoint is inconsistent, download it again."
                )
            base[name] = tensor
    return base


def _lora_parts(adapter: Mapping[str, _Tensor], problems: list[str]) -> dict[str, dict[str, _Tensor]]:
    """module -> {"A": lora_A, "B": lora_B} of the adapter file; what else it holds goes to `problems`."""
    parts: dict[str, dict[str, _Tensor]] = {}
    others: list[str] = []
    for name, tensor in adapter.items():
        match = _LORA_KEY.match(name)
        if match is None:
            others.append(name)
        else:
            parts.setdefault(match["module"], {})[match["part"]] = tensor
    embeddings = [n for n in others if ".lora_embedding_" in n]
    if embeddings:
        problems.append(f"LoRA on embeddings ({len(embeddings)} tensors, e.g. {embeddings[0]})")
    rest = [n for n in others if ".lora_embedding_" not in n]
    if rest:
        problems.append(f"adapter tensors that are not lora_A/lora_B weights: {_few(rest)}")
    return parts


def _lora_pair(
    info: AdapterInfo,
    adapter_file: Path,
    module: str,
    found: Mapping[str, _Tensor],
    base: Mapping[str, _Tensor],
    problems: list[str],
) -> tuple[_Tensor, _Tensor] | None:
    """(lora_A, lora_B) of `module` when the streaming merge can merge it into its base weight; None
    (with the reason in `problems`) when not; AdapterError when the file contradicts the config."""
    if set(found) != {"A", "B"}:
        raise AdapterError(
            f"{adapter_file}: {module} has lora_{''.join(found)} but not both A and B; the adapter file is incomplete."
        )
    a, b = found["A"], found["B"]
    if len(a.shape) != 2 or len(b.shape) != 2:
        problems.append(f"{module} is not a linear layer (lora_A shape {list(a.shape)})")
        return None
    r, _ = info.rank_and_alpha(module)
    if a.shape[0] != r or b.shape[1] != r:
        raise AdapterError(
            f"{adapter_file}: {module} has rank {a.shape[0]} (lora_A {list(a.shape)}, lora_B {list(b.shape)}) "
            f"but adapter_config.json gives r={r}; fix r/rank_pattern or re-save the adapter."
        )
    target = base.get(f"{module}.weight")
    if target is None:
        problems.append(f"adapter module {module} matches no base tensor (looked for {module}.weight)")
        return None
    # Linear layers store (out, in), Conv1D (in, out): peft tells which, once the model is known.
    if target.shape not in ((b.shape[0], a.shape[1]), (a.shape[1], b.shape[0])):
        problems.append(
            f"{target.name} has shape {list(target.shape)} but the adapter's B@A is {[b.shape[0], a.shape[1]]}"
        )
        return None
    if not {target.dtype, a.dtype, b.dtype} <= _MERGEABLE_DTYPES:
        problems.append(f"{target.name} is {target.dtype} (quantized or not floating point)")
        return None
    return a, b


def _few(names: Iterable[str], n: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


# --- the model: what transformers and peft make of it, learnt on the meta device -----------------------------


@dataclass(frozen=True)
class _PeftLayer:
    """How peft merges LoRA into one linear layer: delta = transpose(B @ A, fan_in_fan_out) * scaling."""

    r: int
    scaling: float
    fan_in_fan_out: bool


@dataclass(frozen=True)
class _ModelView:
    """The base model as transformers loads it and the adapter as peft applies it (no weight is read)."""

    model_class: str
    saved: Mapping[str, tuple[str, tuple[int, ...]]]  # what save_pretrained writes: name -> (dtype, shape)
    tied: Mapping[str, str]  # tied parameter -> the parameter it shares
    layers: Mapping[str, _PeftLayer]  # module -> how peft merges into it (plain LoRA linear layers)
    wrapped: frozenset[str]  # every module peft puts an adapter layer on
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def _declared_class(base_dir: Path, info: AdapterInfo) -> Any:
    """The transformers class to load the base with: the one its config declares, never a narrower one.

    `architectures[0]` when it is a generation class; otherwise (a bare `BartModel`, no architectures) the
    auto class for the task: sequence-to-sequence for an encoder-decoder (or a SEQ_2_SEQ_LM adapter), else
    causal LM. A class transformers does not have (a model with its own code) is refused.
    """
    import transformers

    config = _auto_config(base_dir)
    names = [n for n in (getattr(config, "architectures", None) or []) if isinstance(n, str)]
    declared = getattr(transformers, names[0], None) if names else None
    if names and declared is None:
        raise ModelSourceError(
            f"{base_dir / 'config.json'}: architectures[0] is {names[0]!r}, which transformers does not provide "
            f"(a model with its own code): deploygate never runs a model's own code; {_ADAPTER_ONLY}."
        )
    if declared is not None and callable(getattr(declared, "can_generate", None)) and declared.can_generate():
        return declared
    if getattr(config, "is_encoder_decoder", False) or info.task_type == "SEQ_2_SEQ_LM":
        return transformers.AutoModelForSeq2SeqLM
    return transformers.AutoModelForCausalLM


def _auto_config(base_dir: Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(base_dir)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelSourceError(
            f"{base_dir / 'config.json'}: transformers cannot read it ({first_line(exc, 300)}); point the base model "
            "at a directory written by save_pretrained."
        ) from exc


def _load(cls: Any, directory: Path, **kwargs: Any) -> tuple[Any, Mapping[str, Any]]:
    """`cls.from_pretrained(directory, dtype="auto")` with its loading report, without its log noise."""
    with _quiet():
        model, loading = cls.from_pretrained(directory, dtype="auto", output_loading_info=True, **kwargs)
    return model.eval(), loading


def _check_loading(base_dir: Path, model: Any, loading: Mapping[str, Any]) -> list[str]:
    """A base tensor the class needs but the checkpoint lacks would be random: an error. Checkpoint tensors
    the class does not have are left out by transformers (and peft): a warning that names them."""
    cls = type(model).__name__
    missing = sorted(loading.get("missing_keys") or [])
    mismatched = sorted(
        str(k[0] if isinstance(k, tuple) else k) for k in loading.get("mismatched_keys") or []
    )
    if missing or mismatched:
        what = "lacks" if missing else "has other shapes for"
        raise ModelSourceError(
            f"{base_dir}: the checkpoint {what} tensors {cls} needs ({_few(missing or mismatched)}), so a merged "
            "model would hold random weights; point the base model at the checkpoint the adapter was trained on."
        )
    unexpected = sorted(loading.get("unexpected_keys") or [])
    if unexpected:
        return [
            f"the base checkpoint has tensors {cls} does not load, left out as peft does: {_few(unexpected)}"
        ]
    return []


def _saved_index(model: Any) -> dict[str, tuple[str, tuple[int, ...]]]:
    """name -> (dtype, shape) of what `model.save_pretrained` writes, computed on meta copies (no data).

    The same three steps save_pretrained takes: drop `_keys_to_ignore_on_save`, drop tied duplicates,
    revert the weight conversions of loading (e.g. fused MoE experts back to one tensor per expert).
    """
    import torch
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    state = {
        k: v if v.device.type == "meta" else torch.empty(v.shape, dtype=v.dtype, device="meta")
        for k, v in model.state_dict().items()
    }
    for key in getattr(model, "_keys_to_ignore_on_save", None) or []:
        state.pop(key, None)
    # A meta copy has no storage to compare, so ties are found through the model's own parameters.
    state = remove_tied_weights_from_state_dict(state, model)
    state = revert_weight_conversion(model, state)
    return {name: (_safetensors_dtype(t.dtype), tuple(t.shape)) for name, t in state.items()}


def _safetensors_dtype(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    for key, value in _TORCH_DTYPES.items():
        if value == name:
            return key
    raise MergeError(f"tensor dtype {name} has no safetensors name; this merge cannot write it.")


def _linear_layers() -> frozenset[type]:
    """Layer classes whose weight peft merges as an nn.Linear's: nn.Linear itself and transformers'
    subclasses that only change `forward` (checked on the matrix). Quantized or other subclasses: peft."""
    from torch import nn

    classes: set[type] = {nn.Linear}
    try:
        from transformers.models.falcon.modeling_falcon import FalconLinear

        classes.add(FalconLinear)
    except ImportError:  # pragma: no cover - another transformers: plain nn.Linear only
        pass
    return frozenset(classes)


def _model_view(base_dir: Path, info: AdapterInfo) -> _ModelView:
    """Load the base on the meta device with its declared class, put the adapter on it with peft, and read
    what each of them decided: tensor names, dtypes (fp32-kept modules) and ties; the modules peft wraps,
    their layer kind, r, scaling and orientation."""
    from peft import PeftModel
    from peft.tuners.lora.layer import Linear as LoraLinear
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import AuxiliaryTrainingWrapper
    from transformers.pytorch_utils import Conv1D

    cls = _declared_class(base_dir, info)
    model, loading = _load(cls, base_dir, device_map="meta")
    warnings_ = _check_loading(base_dir, model, loading)
    saved = _saved_index(model)
    tied = dict(getattr(model, "all_tied_weights_keys", None) or {})
    with _quiet():
        peft_model = PeftModel.from_pretrained(model, str(info.adapter_dir), low_cpu_mem_usage=True)
    problems: list[str] = []
    layers: dict[str, _PeftLayer] = {}
    wrapped: set[str] = set()
    linear_layers = _linear_layers()
    for name, module in peft_model.named_modules():
        short = name.removeprefix("base_model.model.")
        if isinstance(module, AuxiliaryTrainingWrapper):
            problems.append(f"peft replaces {short} with a {type(module).__name__}")
            continue
        if not isinstance(module, BaseTunerLayer):
            continue
        wrapped.add(short)
        base_layer = module.get_base_layer()
        plain = (
            type(module) is LoraLinear
            and list(module.lora_A) == ["default"]
            and not module.lora_variant
            and not any(module.lora_bias.values())
            and not any(module.use_dora.values())
            and (type(base_layer) in linear_layers or isinstance(base_layer, Conv1D))
        )
        if not plain:
            problems.append(f"peft wraps {short} ({type(base_layer).__name__}) as {type(module).__name__}")
            continue
        lora: Any = module
        layers[short] = _PeftLayer(
            int(lora.r["default"]), float(lora.scaling["default"]), bool(lora.fan_in_fan_out)
        )
    return _ModelView(
        type(model).__name__,
        MappingProxyType(saved),
        MappingProxyType(tied),
        MappingProxyType(layers),
        frozenset(wrapped),
        tuple(problems),
        tuple(warnings_),
    )


# --- the plan: every output tensor, where it comes from, and what is merged into it -------------------------


@dataclass(frozen=True)
class _LoraModule:
    module: str  # name in the base model, as peft's rank_pattern/alpha_pattern see it
    a: _Tensor
    b: _Tensor
    scaling: float
    fan_in_fan_out: bool


@dataclass(frozen=True)
class _OutTensor:
    """One tensor of the merged checkpoint: copied from `source`, or cast to `dtype`, and/or LoRA merged in."""

    source: _Tensor
    dtype: str
    lora: _LoraModule | None = None

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def shape(self) -> tuple[int, ...]:
        return self.source.shape

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * _DTYPE_BYTES[self.dtype]

    @property
    def copied(self) -> bool:
        return self.lora is None and self.dtype == self.source.dtype


@dataclass(frozen=True)
class _Plan:
    tensors: tuple[_OutTensor, ...]  # every output tensor, in the base's file order
    expected: Mapping[str, tuple[str, tuple[int, ...]]]  # what peft's merge + save_pretrained would write
    model_class: str
    warnings: tuple[str, ...]

    @property
    def merged(self) -> int:
        return sum(1 for t in self.tensors if t.lora is not None)


def _plan(info: AdapterInfo, files: _Files, view: _ModelView) -> tuple[_Plan | None, list[str]]:
    """Match the checkpoint to what transformers and peft would do with it; problems when it does not match."""
    _check_weights_match_config(files, view)
    problems = [*view.problems, *_layout_problems(files, view)]
    lora = _lora_modules(info, files, view, problems)
    if problems:
        return None, problems
    tensors: list[_OutTensor] = []
    for tensor in sorted(files.base.values(), key=_file_order(files.base_files)):
        dtype, loaded_shape = view.saved[tensor.name]
        if loaded_shape != tensor.shape:
            problems.append(
                f"{tensor.name} is stored as {list(tensor.shape)}, loaded as {list(loaded_shape)}"
            )
        elif dtype != tensor.dtype and not {dtype, tensor.dtype} <= _MERGEABLE_DTYPES:
            problems.append(f"{tensor.name} is stored as {tensor.dtype}, loaded as {dtype}")
        elif tensor.name in lora and dtype not in _MERGEABLE_DTYPES:
            problems.append(f"{tensor.name} is loaded as {dtype} (quantized or not floating point)")
        tensors.append(_OutTensor(tensor, dtype, lora.get(tensor.name)))
    if problems:
        return None, problems
    return _Plan(tuple(tensors), view.saved, view.model_class, view.warnings), []


def _check_weights_match_config(files: _Files, view: _ModelView) -> None:
    """An adapter whose weights and config disagree is not merged by anyone: peft would drop the weights
    of modules it does not wrap, and merge the initial values of wrapped modules that have none."""
    unused = sorted(set(files.pairs) - view.wrapped)
    if unused:
        raise AdapterError(
            f"{files.adapter_file}: holds LoRA weights for {_few(unused)}, which adapter_config.json does not "
            "target (peft would ignore them); fix target_modules or re-save the adapter with peft."
        )
    absent = sorted(set(view.layers) - set(files.pairs))
    if absent:
        raise AdapterError(
            f"{files.adapter_file}: has no LoRA weights for {_few(absent)}, which adapter_config.json targets "
            "(peft would merge their initial values); fix target_modules or re-save the adapter with peft."
        )


def _layout_problems(files: _Files, view: _ModelView) -> list[str]:
    """Where the stored tensors are not what transformers writes for the model (names, ties)."""
    problems: list[str] = []
    stored, saved = set(files.base), set(view.saved)
    if stored != saved:
        problems.append(
            f"the checkpoint's tensors differ from what transformers writes for {view.model_class} "
            f"(only stored: {_few(sorted(stored - saved)) or '-'}; only written: {_few(sorted(saved - stored)) or '-'})"
        )
    for target, source in sorted(view.tied.items()):
        if target in stored and source in stored:
            problems.append(
                f"the checkpoint stores both {target} and {source}, which the config ties (transformers shares "
                "them when they are equal)"
            )
    return problems


def _lora_modules(
    info: AdapterInfo, files: _Files, view: _ModelView, problems: list[str]
) -> dict[str, _LoraModule]:
    """weight name -> how peft merges into it, for every layer peft wraps; refusals raise."""
    tied = {name for pair in view.tied.items() for name in pair}
    lora: dict[str, _LoraModule] = {}
    for module, layer in sorted(view.layers.items()):
        a, b = files.pairs[module]
        weight = f"{module}.weight"
        if a.shape[0] != layer.r or b.shape[1] != layer.r:
            raise AdapterError(
                f"{files.adapter_file}: {module} has rank {a.shape[0]} but peft reads r={layer.r} for it from "
                "adapter_config.json; fix r/rank_pattern or re-save the adapter."
            )
        if weight in tied:
            partner = next(t if s == weight else s for t, s in view.tied.items() if weight in (t, s))
            raise _tied_refusal(info, weight, partner)
        if weight not in files.base or weight not in view.saved:
            problems.append(f"{module}'s weight is not stored as {weight}")
            continue
        shape = (a.shape[1], b.shape[0]) if layer.fan_in_fan_out else (b.shape[0], a.shape[1])
        if view.saved[weight][1] != shape:
            problems.append(f"{weight} has shape {list(view.saved[weight][1])}, peft's delta {list(shape)}")
        lora[weight] = _LoraModule(module, a, b, layer.scaling, layer.fan_in_fan_out)
    return lora


def _plan_from_files(info: AdapterInfo, files: _Files) -> _Plan:
    """The plan the adapter config and the headers give, before transformers and peft are asked: every
    tensor in its stored dtype, each LoRA pair with the config's scaling, transposed when the weight is
    stored (in, out) (or, for a square one, when the config says fan_in_fan_out)."""
    lora: dict[str, _LoraModule] = {}
    for module, (a, b) in files.pairs.items():
        target = files.base[f"{module}.weight"]
        out_in, in_out = (b.shape[0], a.shape[1]), (a.shape[1], b.shape[0])
        transposed = info.fan_in_fan_out if out_in == in_out else target.shape == in_out
        lora[target.name] = _LoraModule(module, a, b, info.scaling(module), transposed)
    tensors = tuple(
        _OutTensor(t, t.dtype, lora.get(t.name))
        for t in sorted(files.base.values(), key=_file_order(files.base_files))
    )
    return _Plan(tensors, MappingProxyType({}), "", ())


def _file_order(files: Sequence[Path]) -> Callable[[_Tensor], tuple[int, int]]:
    rank = {f: i for i, f in enumerate(files)}
    return lambda t: (rank[t.file], t.start)


# --- the streaming merge -----------------------------------------------------------------------------------


def _try_streaming(
    info: AdapterInfo,
    base: Path,
    out: Path,
    *,
    max_shard_bytes: int,
    progress: ProgressCallback | None,
    sink: ShardSink | None = None,
) -> tuple[MergeReport | None, list[str]]:
    """Stream the merge when it can be exact; (None, the reasons) when it cannot, with nothing left in `out`.

    The merge is streamed on the plan the adapter config and the file headers give while a second thread
    asks transformers and peft what they would do with this base and adapter (on the meta device; importing
    transformers alone takes seconds, which the streaming hides). Their plan must be the one streamed (else
    the merge is streamed again on theirs, and `progress` counts the tensors again: a dtype transformers
    casts, a layer peft transposes whatever the config says), and the written model must hold the tensors
    peft's merge + save_pretrained would write.

    With a `sink` (shards handed over one by one, the base's bytes fetched per shard) transformers and
    peft are asked first, so that the one streaming pass is on their plan: a second pass would fetch
    the base again.
    """
    files, problems = _read_files(info, base)
    if files is None:
        return None, problems
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    if sink is not None:
        return _stream_to_sink(info, files, base, out, max_shard_bytes, progress, sink)
    guess = _plan_from_files(info, files)
    view = _Background(_view_or_error, base, info)
    try:
        with _quick_thread_switches(view):
            report = _stream(guess, base, info, out, max_shard_bytes=max_shard_bytes, progress=progress)
    except BaseException:
        view.wait()  # never leave it running (and holding the warning filters) behind the caller
        raise
    try:
        plan, problems = _plan(info, files, view.result())
        if plan is None:
            _remove_weights(out)
            return None, problems
        if plan.tensors != guess.tensors:
            log.info("merge: transformers/peft load this model differently from its files: streaming again")
            _remove_weights(out)
            report = _stream(plan, base, info, out, max_shard_bytes=max_shard_bytes, progress=progress)
        _check_written(out, plan.expected, "the streaming merge")
        _check_config(out, base)
    except BaseException:
        _remove_weights(out)
        raise
    return dataclasses.replace(report, warnings=(*plan.warnings, *report.warnings)), []


def _stream_to_sink(
    info: AdapterInfo,
    files: _Files,
    base: Path,
    out: Path,
    max_shard_bytes: int,
    progress: ProgressCallback | None,
    sink: ShardSink,
) -> tuple[MergeReport | None, list[str]]:
    """The streaming merge on transformers' and peft's plan, each shard handed to `sink` when written
    (its file may be gone afterwards: the tensors written are checked from the headers kept)."""
    plan, problems = _plan(info, files, _view_or_error(base, info))
    if plan is None:
        return None, problems
    written: dict[str, tuple[str, tuple[int, ...]]] = {}
    try:
        report = _stream(
            plan,
            base,
            info,
            out,
            max_shard_bytes=max_shard_bytes,
            progress=progress,
            sink=sink,
            index=written,
        )
        _check_written(out, plan.expected, "the streaming merge", written)
        _check_config(out, base)
    except BaseException:
        _remove_weights(out)
        raise
    return dataclasses.replace(report, warnings=(*plan.warnings, *report.warnings)), []


class _Background:
    """Run `function(*args)` on a daemon thread; `result()` waits for it and returns (or raises) what it did."""

    def __init__(self, function: Callable[..., _ModelView], *args: Any) -> None:
        self._value: _ModelView | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(function, args), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[..., _ModelView], args: tuple[Any, ...]) -> None:
        try:
            self._value = function(*args)
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> _ModelView:
        self._thread.join()
        if self._error is not None:
            raise self._error
        assert self._value is not None
        return self._value


@contextlib.contextmanager
def _quick_thread_switches(background: _Background) -> Iterator[None]:
    """While `background` runs Python (imports), hand the GIL back within 0.1 ms instead of 5 ms.

    The streaming thread needs the GIL for a moment between each of its few thousand kernel and I/O calls;
    with the default switch interval each of those moments could wait 5 ms behind the importing thread.
    Only when the thread switches, never what either thread computes, changes.
    """
    previous = sys.getswitchinterval()
    if background.alive():
        sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(previous)


def _view_or_error(base: Path, info: AdapterInfo) -> _ModelView:
    try:
        return _model_view(base, info)
    except DeployGateError:
        raise
    except Exception as exc:
        # What peft's own loading would hit too: say it in one line rather than with a traceback.
        raise MergeError(
            f"{info.adapter_dir}: transformers or peft cannot load it onto {base} ({type(exc).__name__}: "
            f"{first_line(exc, 300)}); {_ADAPTER_ONLY}."
        ) from exc


def merge_lora_streaming(
    base_dir: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: ProgressCallback | None = None,
) -> MergeReport:
    """Write base + LoRA into `out_dir` as safetensors shards, one tensor in memory at a time.

    Each targeted weight becomes `W + (B @ A) * scaling` computed in float32 and rounded once to the dtype
    transformers loads it in, exactly as peft's merge_and_unload; every other tensor is copied byte for
    byte (or cast, when transformers loads it in another dtype). The written tensors are then checked
    against what peft's merge + save_pretrained would write. Raises AdapterError listing the problems when
    the merge cannot be exact (use `merge` for the fallback).
    """
    info = inspect_adapter(adapter_dir)
    report, problems = _try_streaming(
        info, Path(base_dir), Path(out_dir), max_shard_bytes=max_shard_bytes, progress=progress
    )
    if report is None:
        raise AdapterError(
            f"{info.adapter_dir}: the streaming merge cannot be exact: {'; '.join(problems)}. "
            "Use merge(..., fallback='peft') to merge with peft instead."
        )
    return report


def _stream(
    plan: _Plan,
    base: Path,
    info: AdapterInfo,
    out: Path,
    *,
    max_shard_bytes: int,
    progress: ProgressCallback | None,
    sink: ShardSink | None = None,
    index: dict[str, tuple[str, tuple[int, ...]]] | None = None,
) -> MergeReport:
    _prepare_out_dir(out)
    shards = plan_shards([_planned(t, base) for t in plan.tensors], max_shard_bytes)
    log.info(
        "merge: streaming %d tensors (%d with LoRA) from %s into %d shard(s) in %s",
        len(plan.tensors), plan.merged, base, len(shards.shards), out,
    )  # fmt: skip
    warnings: list[str] = []
    writing = _ShardWriting(out, base, plan, progress, warnings, sink, {} if index is None else index)
    try:
        bytes_written = _write_shards(writing, shards)
        _copy_side_files(base, info.adapter_dir, out, model_files=True)
    except BaseException as exc:
        # Never leave half a model behind for a later step to upload.
        _remove_weights(out)
        if isinstance(exc, OSError):
            raise MergeError(
                f"{out}: writing the merged model failed ({exc}); free disk space or fix permissions and retry."
            ) from exc
        raise
    return MergeReport(
        method="streaming",
        tensors_total=len(plan.tensors),
        tensors_merged=plan.merged,
        shards=tuple(s.name for s in shards.shards),
        bytes_written=bytes_written,
        warnings=tuple(warnings),
    )


def _planned(tensor: _OutTensor, base: Path) -> PlannedTensor:
    source = tensor.source
    return PlannedTensor(
        tensor.name, tensor.nbytes, source.file.relative_to(base).as_posix(), source.start, source.nbytes
    )


@dataclass
class _ShardWriting:
    """What writing the shards of one plan shares: where, the plan, who is told, what was written."""

    out: Path
    base: Path
    plan: _Plan
    progress: ProgressCallback | None
    warnings: list[str]
    sink: ShardSink | None
    index: dict[str, tuple[str, tuple[int, ...]]]  # name -> (dtype, shape) of every tensor written
    done: int = 0


def _write_shards(writing: _ShardWriting, shards: ShardPlan) -> int:
    """Write every shard in order (with a sink: fetch its base bytes first, hand it over after), then
    the index; the bytes written."""
    by_name = {t.name: t for t in writing.plan.tensors}
    total, sink = len(shards.shards), writing.sink
    bytes_written = 0
    with _FileReader() as reader:
        for number, shard in enumerate(shards.shards, 1):
            if sink is not None:
                sink.fetch(shard, number, total)
            path = writing.out / shard.name
            tensors = [by_name[n] for n in shard.tensors]
            base_bytes = None if sink is None else _BaseBytes(sink, writing.base)
            for _tensor in _write_shard(path, tensors, reader, writing.warnings, base_bytes):
                writing.done += 1
                if writing.progress is not None:
                    writing.progress(writing.done, len(by_name), shard.name)
            size = path.stat().st_size
            bytes_written += size
            writing.index.update((n, (t.dtype, t.shape)) for n, t in _read_header(path, MergeError).items())
            log.info(
                "merge: wrote %s (%d/%d tensors, %.1f MB)", shard.name, writing.done, len(by_name), size / 1e6
            )
            if sink is not None:
                sink.release(shard.needs)
                sink.written(shard, str(path), number, total)
    if total > 1:
        index = {"metadata": {"total_size": shards.total_bytes}, "weight_map": shards.weight_map()}
        (writing.out / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return bytes_written


@dataclass(frozen=True)
class _BaseBytes:
    """A streamed merge's base bytes, tensor by tensor: wait until the sink has them on disk (`ready`),
    tell it once read (`consumed`)."""

    sink: ShardSink
    base: Path

    def ready(self, source: _Tensor) -> None:
        self.sink.ready(_source_range(source, self.base))

    def consumed(self, source: _Tensor) -> None:
        self.sink.consumed(_source_range(source, self.base))


def _source_range(source: _Tensor, base: Path | None = None) -> ByteRange:
    """The bytes of a stored tensor, its file named relative to `base` (else as it is)."""
    name = str(source.file) if base is None else source.file.relative_to(base).as_posix()
    return ByteRange(name, source.start, source.start + source.nbytes)


def _prepare_out_dir(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stale = [
        p.name for p in out.iterdir() if p.name.endswith((".safetensors", ".bin")) or p.name == SAFE_INDEX
    ]
    if stale:
        raise MergeError(
            f"{out}: already holds model weights ({_few(stale)}); merge into an empty directory."
        )


def _write_shard(
    path: Path,
    shard: Sequence[_OutTensor],
    reader: _FileReader,
    warnings: list[str],
    base_bytes: _BaseBytes | None = None,
) -> Iterator[_OutTensor]:
    """Write one output shard: the header first (sizes never change), then each tensor as it is produced.
    With `base_bytes`, each tensor's base bytes are waited for before they are read, and given back on
    the writer thread once read (after its copy, or after its write) when no other tensor of the shard
    shares them."""
    # Widest dtypes first keeps every tensor aligned to its element size, as safetensors' writer does.
    ordered = sorted(shard, key=lambda t: -_DTYPE_BYTES.get(t.dtype, 1))
    freeable = alone([_source_range(t.source) for t in ordered]) if base_bytes else [False] * len(ordered)
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in ordered:
        header[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    # One writer thread (it releases the GIL in write/copy_file_range) writes tensor i while this thread
    # computes tensor i+1 into the other of two weight buffers; a single worker keeps the file order.
    writes: list[Future[None]] = []
    in_flight: list[Future[None] | None] = [None, None]
    computed = 0
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploygate-merge-writer") as writer:
            writes.append(writer.submit(_write_all, fd, struct.pack("<Q", len(encoded)) + encoded))
            for tensor, free in zip(ordered, freeable, strict=True):
                if base_bytes is not None:
                    base_bytes.ready(tensor.source)
                if tensor.copied:
                    writes.append(writer.submit(reader.copy_to, tensor.source, fd))
                else:
                    slot = computed % 2
                    computed += 1
                    previous = in_flight[slot]
                    if previous is not None:
                        previous.result()  # the writer must be done with that buffer before it is refilled
                    produced = _produce(tensor, reader, slot, warnings)
                    future = writer.submit(_write_all, fd, produced.view(-1).view(_uint8()).numpy().data)
                    in_flight[slot] = future
                    writes.append(future)
                if free and base_bytes is not None:  # after the copy (the one writer runs tasks in order)
                    writes.append(writer.submit(base_bytes.consumed, tensor.source))
                yield tensor
                if writes[0].done():
                    writes.pop(0).result()  # surface a write error early
            for write in writes:
                write.result()
    finally:
        os.close(fd)  # a failed shard is removed by merge_lora_streaming, with the others


def _produce(tensor: _OutTensor, reader: _FileReader, slot: int, warnings: list[str]) -> torch.Tensor:
    """The output tensor: the stored one in the dtype transformers loads it in, with LoRA merged in."""
    import torch

    value = reader.tensor(tensor.source, slot=slot)
    dtype = getattr(torch, _TORCH_DTYPES[tensor.dtype])
    if value.dtype != dtype:
        # What transformers' loading does (e.g. a `_keep_in_fp32_modules` weight of an fp16 model):
        # one `.to()`, exact for an upcast, round-to-nearest-even for a downcast.
        value = value.to(dtype)
    if tensor.lora is not None:
        _merge_into(value, tensor.lora, reader, warnings)
    return value


def _merge_into(weight: torch.Tensor, module: _LoraModule, reader: _FileReader, warnings: list[str]) -> None:
    """peft's merge for one linear layer, on CPU, with the same operations in the same order.

    peft (autocast_adapter_dtype) holds A and B in float32, so get_delta_weight is
    `transpose(B @ A, fan_in_fan_out) * scaling` in float32, and `weight.data += delta` computes
    float32(W) + delta and rounds once to W's dtype: `(W.float() + delta).to(W.dtype)`. The weight and
    the delta live in buffers reused from tensor to tensor (fresh 100 MB allocations cost more in page
    faults than the arithmetic); out= and in-place variants run the same kernels, so the bits match.
    """
    import torch

    a = reader.tensor(module.a).float()
    b = reader.tensor(module.b).float()
    delta = reader.float_workspace(b.shape[0] * a.shape[1]).view(b.shape[0], a.shape[1])
    # The product runs with torch's thread settings, exactly as peft's `B @ A` does, so the BLAS
    # kernel and its partitioning are the same; everything after it is elementwise.
    torch.matmul(b, a, out=delta)
    with _single_thread():
        if not (bool(a.isfinite().all()) and bool(b.isfinite().all())):
            # Checked on the small factors rather than the merged weight: a fraction of the cost.
            warnings.append(
                f"{module.module}: the adapter's lora_A/lora_B hold NaN or inf; the merged weight will too"
            )
        if module.fan_in_fan_out:
            delta = delta.T
        _add_into(weight, delta, module.scaling)


@contextlib.contextmanager
def _single_thread() -> Iterator[None]:
    """Run torch's elementwise kernels on one thread, then restore the setting.

    They are memory-bound, so a second thread gains little on an idle machine, while on a busy 2-core
    runner every parallel region waits for a descheduled thread (measured: 5-10x slower). Elementwise
    results do not depend on the thread count, so this changes time, never bits.
    """
    import torch

    previous = torch.get_num_threads()
    if previous == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# Elements per block when adding a float32 delta into a bf16/fp16 weight (8 MB of float32): small blocks
# stay in cache but cost a thread fork/join each, which hurts on a busy 2-core runner.
_ADD_CHUNK = 1 << 21


def _add_into(weight: torch.Tensor, delta: torch.Tensor, scaling: float) -> None:
    """`weight += delta * scaling` (float32 delta) with the result peft's `weight.data += delta` gets.

    peft scales the float32 delta (one float32 multiply per element), then its mixed-dtype in-place add
    computes float32(W) + delta and rounds once to W's dtype, element by element, through a slow
    per-element casting loop. Here, block by block of rows: the block of the delta is scaled into a small
    buffer (the same multiply), the block of W upcast, added in float32 and copied back (exact upcast, one
    float32 add, one round-to-nearest-even) with vectorised kernels, 4-5x faster, and the 4-byte delta is
    read once instead of three times. Elementwise, so blocking cannot change a bit.
    """
    import torch

    if weight.dtype not in (torch.bfloat16, torch.float16):
        # float32/float64: one dtype (or a wider one), the plain add is already fast
        weight.add_(delta.mul_(scaling))
        return
    rows = max(1, _ADD_CHUNK // max(1, weight.shape[-1]))
    buffer = torch.empty(rows * weight.shape[-1], dtype=torch.float32)
    scaled = torch.empty(rows * weight.shape[-1], dtype=torch.float32)
    for start in range(0, weight.shape[0], rows):
        block = weight[start : start + rows]
        work = buffer[: block.numel()].view(block.shape)
        part = scaled[: block.numel()].view(block.shape)
        torch.mul(delta[start : start + rows], scaling, out=part)
        work.copy_(block)
        work.add_(part)
        block.copy_(work)


class _FileReader:
    """Reads tensors with pread (not mmap, so untouched pages never count towards RSS) and copies raw bytes."""

    _CHUNK = 64 * 1024 * 1024

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}
        self._lock = threading.Lock()
        self._slots = [bytearray(), bytearray()]
        self._floats: torch.Tensor | None = None

    def __enter__(self) -> _FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def _fd(self, path: Path) -> int:
        with self._lock:  # the writer thread copies from the same files
            if path not in self._fds:
                self._fds[path] = os.open(path, os.O_RDONLY)
            return self._fds[path]

    def tensor(self, tensor: _Tensor, *, slot: int | None = None) -> torch.Tensor:
        """The tensor, read into fresh memory, or into reusable buffer `slot` (0 or 1), which the next
        read into the same slot overwrites."""
        import torch

        if slot is not None:
            if len(self._slots[slot]) < tensor.nbytes:
                self._slots[slot] = bytearray()  # free the old buffer before allocating the larger one
                self._slots[slot] = bytearray(tensor.nbytes)
            buffer = self._slots[slot]
        else:
            buffer = bytearray(tensor.nbytes)
        view = memoryview(buffer)[: tensor.nbytes]
        fd = self._fd(tensor.file)
        got = 0
        while got < tensor.nbytes:
            n = os.preadv(fd, [view[got:]], tensor.start + got)
            if n <= 0:
                raise MergeError(
                    f"{tensor.file}: ended inside {tensor.name}; the file is truncated, download it again."
                )
            got += n
        dtype = getattr(torch, _TORCH_DTYPES[tensor.dtype])
        if tensor.nbytes == 0:
            return torch.empty(tensor.shape, dtype=dtype)
        count = tensor.nbytes // _DTYPE_BYTES[tensor.dtype]
        return torch.frombuffer(buffer, dtype=dtype, count=count).view(tensor.shape)

    def float_workspace(self, numel: int) -> torch.Tensor:
        """A float32 buffer of at least `numel` elements, reused from call to call."""
        import torch

        if self._floats is None or self._floats.numel() < numel:
            self._floats = None
            self._floats = torch.empty(numel, dtype=torch.float32)
        return self._floats[:numel]

    def copy_to(self, tensor: _Tensor, out_fd: int) -> None:
        src = self._fd(tensor.file)
        offset, remaining = tensor.start, tensor.nbytes
        while remaining:
            try:
                # In-kernel copy: the bytes never enter this process.
                n = os.copy_file_range(src, out_fd, min(remaining, self._CHUNK), offset)
            except OSError:
                n = 0
            if n <= 0:  # unsupported here (or a short file): copy through a buffer instead
                data = os.pread(src, min(remaining, self._CHUNK), offset)
                if not data:
                    raise MergeError(
                        f"{tensor.file}: ended inside {tensor.name}; the file is truncated, download it again."
                    )
                _write_all(out_fd, data)
                n = len(data)
            offset += n
            remaining -= n


_TORCH_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16", "I32": "int32",
    "U32": "uint32", "I64": "int64", "U64": "uint64", "F16": "float16", "BF16": "bfloat16",
    "F32": "float32", "F64": "float64", "F8_E5M2": "float8_e5m2", "F8_E4M3": "float8_e4m3fn",
}  # fmt: skip


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _uint8() -> torch.dtype:
    import torch

    return torch.uint8


# --- after every merge: the written model against what peft would write ---------------------------------


def _written_index(out: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    index: dict[str, tuple[str, tuple[int, ...]]] = {}
    for path in sorted(out.glob("*.safetensors")):
        for name, tensor in _read_header(path, MergeError).items():
            index[name] = (tensor.dtype, tensor.shape)
    return index


def _check_written(
    out: Path,
    expected: Mapping[str, tuple[str, tuple[int, ...]]],
    how: str,
    written: Mapping[str, tuple[str, tuple[int, ...]]] | None = None,
) -> None:
    """The merged checkpoint (`written`: what its headers hold, else read from `out`) must hold exactly
    the tensors (names, dtypes, shapes) save_pretrained writes for the base model: a merge changes
    values, never which tensors there are."""
    if written is None:
        written = _written_index(out)
    found = [f"missing {n}" for n in sorted(expected.keys() - written.keys())]
    found += [f"unexpected {n}" for n in sorted(written.keys() - expected.keys())]
    found += [
        f"{n} is {written[n][0]}{list(written[n][1])}, not {expected[n][0]}{list(expected[n][1])}"
        for n in sorted(expected.keys() & written.keys())
        if written[n] != expected[n]
    ]
    if found:
        raise MergeError(
            f"{out}: {how} wrote other tensors than the base model has ({_few(found)}); nothing was shipped; "
            f"{_ADAPTER_ONLY}, and report this."
        )


# Keys save_pretrained rewrites on its own: the versions, the resolved dtype, the class it was loaded with.
_VOLATILE_CONFIG_KEYS = frozenset(
    {"transformers_version", "_name_or_path", "dtype", "torch_dtype", "architectures", "_commit_hash"}
)


def _check_config(out: Path, base_dir: Path) -> None:
    """The merged model's config must describe the base model (same type, shapes, ties, vocabulary)."""
    merged, base = _auto_config(out).to_dict(), _auto_config(base_dir).to_dict()
    changed = sorted(
        k for k in (merged.keys() | base.keys()) - _VOLATILE_CONFIG_KEYS if merged.get(k) != base.get(k)
    )
    if changed:
        raise MergeError(
            f"{out / 'config.json'}: the merged model's config differs from the base's in {_few(changed)}; "
            "nothing was shipped; set merge: false to push the adapter alone, and report this."
        )


def _probe(config: Any) -> dict[str, torch.Tensor]:
    """A fixed short input: 8 token ids spread over the vocabulary (and a decoder start for seq2seq)."""
    import torch

    vocab = int(getattr(config.get_text_config(), "vocab_size", 0) or 0)
    if vocab <= 0:
        raise MergeError("the base config has no vocab_size; this merge cannot check the merged model.")
    ids = torch.tensor([[(7 * i + 11) % vocab for i in range(8)]])
    inputs = {"input_ids": ids}
    if getattr(config, "is_encoder_decoder", False):
        start = config.decoder_start_token_id
        start = start if isinstance(start, int) else (config.pad_token_id or 0)
        inputs["decoder_input_ids"] = torch.tensor([[start, *ids[0, :3].tolist()]])
    return inputs


def _logits(model: Any, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
    import torch

    with torch.no_grad():
        logits: torch.Tensor = model(**inputs).logits.float()
    return logits


# How far apart an adapter model and its merged model may be, as a fraction of the largest logit (at least 1):
# rounding the merged weight to the model's dtype once, instead of adding the LoRA branch to each output,
# moves logits by a unit or two in the last place of that dtype (measured on the merge matrix: up to 0.8% in
# bf16, 0.1% in fp16, 5e-7 in fp32); deeper real models add some. A missing encoder, a delta merged into
# the wrong tensor or not at all moves them by the adapter's whole effect.
_LOGIT_TOLERANCE = {"float32": 1e-4, "float64": 1e-8, "float16": 1e-2, "bfloat16": 5e-2}


def _compare_logits(
    adapter: torch.Tensor, merged: torch.Tensor, base: torch.Tensor, dtype: str
) -> str | None:
    """None when the merged model computes what the adapter model computes, else what differs."""
    scale = max(1.0, float(adapter.abs().max()))
    error = float((merged - adapter).abs().max())
    effect = float((adapter - base).abs().max())
    if error <= _LOGIT_TOLERANCE.get(dtype, 5e-2) * scale:
        return None
    return (
        f"on a fixed 8-token input its logits differ from the adapter model's by up to {error:.3g} (the adapter "
        f"moves them by {effect:.3g}; tolerance {_LOGIT_TOLERANCE.get(dtype, 5e-2) * scale:.3g})"
    )


# --- side files, peft reference, fallback ------------------------------------------------------------------


def _copy_side_files(base_dir: Path, adapter_dir: Path, out: Path, *, model_files: bool) -> list[str]:
    """Copy config/generation config (from the base) and the tokenizer (the adapter's if it has one)."""
    copied: list[str] = []
    if model_files:
        for name in MODEL_FILES:
            if (base_dir / name).is_file():
                shutil.copyfile(base_dir / name, out / name)
                copied.append(name)
    source = adapter_dir if has_tokenizer(adapter_dir) else base_dir
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
            copied.append(name)
    return copied


def merge_with_peft(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> MergeReport:
    """peft's own merge, as a user would run it: transformers loads the base (with the class its config
    declares, in the stored dtype), peft loads the adapter, merge_and_unload, save_pretrained.

    The reference the streaming merge is measured against; it holds the whole model in memory and checks
    nothing. `merge` falls back to a checked version of it.
    """
    from peft import PeftModel

    base, out = Path(base_dir), Path(out_dir)
    info = inspect_adapter(adapter_dir)
    _prepare_out_dir(out)
    with _quiet():
        # dtype="auto" keeps the dtype the checkpoint was saved in (bf16 stays bf16).
        model = _declared_class(base, info).from_pretrained(base, dtype="auto")
        peft_model = PeftModel.from_pretrained(model, str(info.adapter_dir))
        merged_modules = _adapter_layers(peft_model)
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(out)
    del model, peft_model, merged
    _copy_side_files(base, info.adapter_dir, out, model_files=False)
    return _report_of(out, "peft", merged_modules, ())


def _adapter_layers(peft_model: Any) -> int:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return sum(1 for _, m in peft_model.named_modules() if isinstance(m, BaseTunerLayer))


def _report_of(out: Path, method: Literal["peft"], merged: int, warnings: Sequence[str]) -> MergeReport:
    shards = tuple(sorted(p.name for p in out.glob("*.safetensors")))
    return MergeReport(
        method=method,
        tensors_total=len(_written_index(out)),
        tensors_merged=merged,
        shards=shards,
        bytes_written=sum((out / s).stat().st_size for s in shards),
        warnings=tuple(warnings),
    )


def _merge_with_peft_checked(base: Path, info: AdapterInfo, out: Path, reasons: Sequence[str]) -> MergeReport:
    """The fallback: peft's merge, then proof that it wrote the model the adapter describes.

    Before merging: the base loads with its declared class and no missing tensor, and peft uses every
    weight of the adapter file. After: the written tensors are exactly what save_pretrained writes for the
    base (names, dtypes, shapes), the config is the base's, and the merged model, loaded back from disk,
    gives the adapter model's logits on a fixed short input.
    """
    import torch
    from peft import PeftModel

    _prepare_out_dir(out)
    try:
        cls = _declared_class(base, info)
        model, loading = _load(cls, base)
        notes = _check_loading(base, model, loading)
        expected = _saved_index(model)
        dtype = str(model.dtype).removeprefix("torch.")
        inputs = _probe(model.config)
        base_logits = _logits(model, inputs)
        with _quiet():
            peft_model = PeftModel.from_pretrained(model, str(info.adapter_dir))
        peft_model.eval()
        _check_adapter_used(peft_model, info)
        _check_no_tied_targets(peft_model, info)
        adapter_logits = _logits(peft_model, inputs)
        layers = _adapter_layers(peft_model)
        with _quiet():
            merged = peft_model.merge_and_unload()
            merged.save_pretrained(out)
        del model, peft_model, merged
        _copy_side_files(base, info.adapter_dir, out, model_files=False)
        _check_written(out, expected, "peft's merge")
        _check_config(out, base)
        reloaded, _ = _load(cls, out)
        merged_logits = _logits(reloaded, inputs)
        del reloaded
        differs = _compare_logits(adapter_logits, merged_logits, base_logits, dtype)
        if differs is not None:
            raise MergeError(
                f"{out}: peft's merge of {info.adapter_dir} does not compute what the adapter model computes: "
                f"{differs}; nothing was shipped; {_ADAPTER_ONLY}."
            )
    except BaseException as exc:
        _remove_weights(out)
        if isinstance(exc, (DeployGateError, KeyboardInterrupt, SystemExit)):
            raise
        if isinstance(exc, torch.OutOfMemoryError | MemoryError):
            raise MergeError(
                f"{base}: not enough memory to merge with peft (it holds the whole model); use a larger runner "
                f"or {_ADAPTER_ONLY}."
            ) from exc
        raise MergeError(
            f"{info.adapter_dir}: peft could not merge it into {base} ({type(exc).__name__}: {first_line(exc, 300)}); "
            f"{_ADAPTER_ONLY}."
        ) from exc
    return _report_of(out, "peft", layers, [*(f"merged with peft: {r}" for r in reasons), *notes])


def _check_adapter_used(peft_model: Any, info: AdapterInfo) -> None:
    """peft must have loaded every tensor of the adapter file, and found one for every adapter weight it made
    (otherwise it silently ignores weights, or merges initial values)."""
    from peft.utils import get_peft_model_state_dict

    path = info.adapter_dir / ADAPTER_SAFETENSORS
    stored = set(_read_header(path, AdapterError)) if path.is_file() else None
    if stored is None:
        return  # a pickled adapter: peft's own loading is all there is
    with _quiet():
        needed = set(get_peft_model_state_dict(peft_model, save_embedding_layers=False))
        known = set(get_peft_model_state_dict(peft_model, save_embedding_layers=True))
    unused, absent = sorted(stored - known), sorted(needed - stored)
    if unused or absent:
        what = f"weights peft does not use: {_few(unused)}" if unused else f"no weights for: {_few(absent)}"
        raise AdapterError(
            f"{path}: holds {what}, given adapter_config.json; fix the config or re-save the adapter with peft."
        )


def _tied_refusal(info: AdapterInfo, weight: str, partner: str) -> AdapterError:
    return AdapterError(
        f"{info.adapter_dir}: the adapter trains {weight}, which the base model ties to {partner} "
        "(tie_word_embeddings): merged into the one shared tensor the change would reach both, while the "
        f"adapter model changes {weight} alone; train with tie_word_embeddings=false, or {_ADAPTER_ONLY}."
    )


def _check_no_tied_targets(peft_model: Any, info: AdapterInfo) -> None:
    """LoRA (or modules_to_save) on one of two tied weights: peft merges it into the shared tensor, so the
    merged model differs from the adapter model it was evaluated as (by 0.4-13 logits on the matrix)."""
    from peft.tuners.lora.layer import LoraLayer
    from peft.utils.other import ModulesToSaveWrapper

    base = peft_model.get_base_model()
    partner: dict[str, str] = {}
    for target, source in (getattr(base, "all_tied_weights_keys", None) or {}).items():
        partner[target], partner[source] = source, target
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer | ModulesToSaveWrapper) and f"{name}.weight" in partner:
            raise _tied_refusal(info, f"{name}.weight", partner[f"{name}.weight"])


def _remove_weights(out: Path) -> None:
    """Remove what a merge writes into `out` (weights, index, configs, tokenizer), so no half is shipped."""
    if out.is_dir():
        for path in out.iterdir():
            if path.name.endswith((".safetensors", ".bin")) or path.name in (
                SAFE_INDEX,
                *MODEL_FILES,
                *TOKENIZER_FILES,
            ):
                path.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence transformers' and peft's logs, progress bars and warnings for the loads this module makes
    itself (meta-device views, the fallback): what matters from them is reported, once, by this module."""
    import warnings

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]


def merge(
    base_dir: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    fallback: Fallback = "peft",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: ProgressCallback | None = None,
    sink: ShardSink | None = None,
) -> MergeReport:
    """Merge by streaming when it reproduces peft exactly; otherwise merge with peft and check the result
    (fallback="peft") or refuse (fallback="error"). An adapter no merge can reproduce is always refused.

    With a `sink`, the base's safetensors files may hold only their headers (the sink fetches each
    shard's bytes) and every written shard is handed to it; the fallback fetches the whole base first."""
    if fallback not in ("peft", "error"):
        raise AdapterError(f"merge fallback must be 'peft' or 'error', got {fallback!r}; pick one of them.")
    base, out = Path(base_dir), Path(out_dir)
    info = inspect_adapter(adapter_dir)
    report, problems = _try_streaming(
        info, base, out, max_shard_bytes=max_shard_bytes, progress=progress, sink=sink
    )
    if report is not None:
        return report
    reasons = "; ".join(problems)
    if fallback == "error":
        raise AdapterError(
            f"{info.adapter_dir}: the streaming merge cannot be exact: {reasons}. "
            "Allow the peft fallback (merge fallback 'peft') or set merge: false to push the adapter only."
        )
    log.warning("merge: falling back to peft merge_and_unload (loads the whole model): %s", reasons)
    if sink is None:
        return _merge_with_peft_checked(base, info, out, problems)
    whole = _whole_base(base)
    sink.fetch(whole, 0, 0)
    for needed in whole.needs:  # peft reads the files itself: every byte must be there first
        sink.ready(needed)
    report = _merge_with_peft_checked(base, info, out, problems)
    sink.release(whole.needs)
    for number, name in enumerate(report.shards, 1):
        sink.written(_whole_file(out, name), str(out / name), number, len(report.shards))
    return report


def _whole_file(folder: Path, name: str) -> OutputShard:
    size = (folder / name).stat().st_size
    return OutputShard(name, (), size, (ByteRange(name, 0, size),))


def _whole_base(base: Path) -> OutputShard:
    """Every byte of the base's safetensors files, as one fetch (what peft's merge reads)."""
    files = _base_weight_files(base) or []
    needs = tuple(ByteRange(f.relative_to(base).as_posix(), 0, f.stat().st_size) for f in files)
    return OutputShard("", (), sum(r.nbytes for r in needs), needs)


def copy_adapter_only(
    adapter_dir: str | Path, out_dir: str | Path, *, base_dir: str | Path | None = None
) -> MergeReport:
    """For `merge: false`: the Hub gets the adapter (config + weights) and a tokenizer, no merged model.

    The tokenizer is the adapter's own if it has one, else `base_dir`'s when given.
    """
    info = inspect_adapter(adapter_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = [n for n in (ADAPTER_SAFETENSORS, ADAPTER_BIN) if (info.adapter_dir / n).is_file()]
    if not weights:
        raise AdapterError(
            f"{info.adapter_dir}: no {ADAPTER_SAFETENSORS} (nor {ADAPTER_BIN}); point the adapter at "
            "the directory peft's save_pretrained wrote."
        )
    written = [ADAPTER_CONFIG, weights[0]]
    for name in written:
        shutil.copyfile(info.adapter_dir / name, out / name)
    written += _copy_side_files(
        Path(base_dir) if base_dir else info.adapter_dir, info.adapter_dir, out, model_files=False
    )
    warnings = (
        ()
        if any(n in TOKENIZER_FILES for n in written)
        else ("no tokenizer found to copy beside the adapter",)
    )
    return MergeReport(
        method="adapter-only",
        tensors_total=0,
        tensors_merged=0,
        shards=(weights[0],),
        bytes_written=sum((out / n).stat().st_size for n in written),
        warnings=warnings,
    )


# What the merge imports (the `merge` extra); checked before the first write, not when the merge starts.
MERGE_MODULES = ("torch", "safetensors", "transformers", "peft")


def missing_modules(names: tuple[str, ...] = MERGE_MODULES) -> list[str]:
    import importlib.util

    return [name for name in names if importlib.util.find_spec(name) is None]


def weights_sizes(base_dir: str | Path) -> tuple[dict[str, int], int] | None:
    """(file -> size of each safetensors file, largest tensor in bytes) of a local base model, from
    its index and headers alone; None when its weights are not safetensors."""
    base = Path(base_dir)
    files = _base_weight_files(base)
    if files is None:
        return None
    largest = 0
    for path in files:
        largest = max([largest, *(t.nbytes for t in _read_header(path, ModelSourceError).values())])
    return {f.relative_to(base).as_posix(): f.stat().st_size for f in files}, largest


class LoraMerger:
    """The Merger port: the streaming merge with peft's as the checked fallback."""

    def weights_sizes(self, base_dir: Path) -> tuple[dict[str, int], int] | None:
        return weights_sizes(base_dir)

    def missing_modules(self) -> list[str]:
        return missing_modules(MERGE_MODULES)

    def inspect(self, adapter_dir: Path) -> AdapterInfo:
        return inspect_adapter(adapter_dir)

    def merge(
        self,
        base_dir: Path,
        adapter_dir: Path,
        out_dir: Path,
        progress: Callable[[int, int, str], None],
        *,
        max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
        sink: ShardSink | None = None,
    ) -> MergeReport:
        return merge(
            base_dir,
            adapter_dir,
            out_dir,
            fallback="peft",
            progress=progress,
            max_shard_bytes=max_shard_bytes,
            sink=sink,
        )

    def copy_adapter_only(self, adapter_dir: Path, out_dir: Path, base_dir: Path) -> MergeReport:
        return copy_adapter_only(adapter_dir, out_dir, base_dir=base_dir)
