"""Merge a LoRA adapter into its base model by streaming safetensors tensor by tensor, matching peft bit for bit.

Adapter layer (files in, files out, all paths given as arguments). It must not import torch, safetensors,
transformers or peft at module level (a run that decides "skip" never pays for them), and it must never
produce a silently wrong model: whatever the streaming merge cannot reproduce exactly (DoRA,
modules_to_save, embeddings, ...) is listed by `merge_problems`, then merged by peft or refused.
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

from deploygate import strictjson
from deploygate.errors import AdapterError, MergeError, ModelSourceError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_SAFETENSORS = "adapter_model.safetensors"
ADAPTER_BIN = "adapter_model.bin"
SAFE_INDEX = "model.safetensors.index.json"
SAFE_SINGLE = "model.safetensors"
MODEL_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
# The files whose presence says "this directory carries its own tokenizer".
_TOKENIZER_MARKERS = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")

# transformers 4.x wrote 5 GB shards; the Hub and most loaders are happiest at or below that.
DEFAULT_MAX_SHARD_BYTES = 5_000_000_000

ProgressCallback = Callable[[int, int, str], None]
Fallback = Literal["peft", "error"]

# --- adapter_config.json ----------------------------------------------------------------------------------

# LoraConfig fields (peft 0.21) that do not change the merged weights: bookkeeping, training-time
# initialisation, and which modules were targeted (the saved tensors already say which).
_HARMLESS_FIELDS = frozenset(
    {
        "auto_mapping",
        "base_model_name_or_path",
        "revision",
        "inference_mode",
        "init_lora_weights",  # except "mica", a variant: checked below
        "lora_dropout",
        "peft_version",
        "task_type",
        "target_modules",
        "exclude_modules",
        "layers_to_transform",
        "layers_pattern",
        "loftq_config",
        "eva_config",
        "corda_config",
        "lora_ga_config",
        "megatron_core",
        "qalora_group_size",
        "ensure_weight_tying",  # tied targets show up as adapter modules with no base tensor
        "runtime_config",
    }
)
# Fields the streaming merge reads and honours (or reports as a problem itself).
_HANDLED_FIELDS = frozenset(
    {
        "peft_type",
        "r",
        "lora_alpha",
        "rank_pattern",
        "alpha_pattern",
        "use_rslora",
        "fan_in_fan_out",
        "bias",
        "modules_to_save",
        "use_dora",
    }
)
# Everything else (LoRA variants, lora_bias, layer_replication, target_parameters, trainable tokens,
# fields a newer peft adds, ...) is a problem whenever it is set: peft knows what it means, we may not.

# transformers models whose attention/MLP projections are Conv1D (weights stored (in, out)): peft
# turns fan_in_fan_out on for them, whatever the adapter config says.
_CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer", "clvp"})


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
    path = adapter / ADAPTER_CONFIG
    if not path.is_file():
        raise AdapterError(
            f"{path}: not found; point the adapter at the directory peft's save_pretrained wrote "
            f"(it holds {ADAPTER_CONFIG} and {ADAPTER_SAFETENSORS})."
        )
    try:
        raw = strictjson.loads(path.read_text(encoding="utf-8"))  # a key given twice is an error, not the last one
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AdapterError(f"{path}: not valid JSON ({exc}); re-save the adapter with peft.") from exc
    if not isinstance(raw, dict):
        raise AdapterError(
            f"{path}: expected a JSON object, got {type(raw).__name__}; re-save the adapter with peft."
        )

    def bad(key: str, expected: str) -> AdapterError:
        return AdapterError(
            f"{path}: {key!r} must be {expected}, got {raw.get(key)!r}; fix it or re-save the adapter with peft."
        )

    def get_bool(key: str) -> bool:
        value = raw.get(key, False)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise bad(key, "true or false")
        return value

    def get_str(key: str, *, default: str | None) -> str | None:
        value = raw.get(key, default)
        if value is not None and not isinstance(value, str):
            raise bad(key, "a string")
        return value

    def get_names(key: str) -> tuple[str, ...] | None:
        value = raw.get(key)
        if value is None:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(key, "a list of module names or null")
        return tuple(value)

    def get_pattern(key: str, kind: type) -> Mapping[str, Any]:
        value = raw.get(key) or {}
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and _is_number(v, integer=kind is int) and v > 0 for k, v in value.items()
        ):
            raise bad(
                key, f"an object of module pattern -> positive {'integer' if kind is int else 'number'}"
            )
        try:
            for k in value:
                re.compile(k)
        except re.error as exc:
            raise bad(key, f"an object whose keys are valid regular expressions ({exc})") from exc
        return MappingProxyType(dict(value))

    peft_type = get_str("peft_type", default="LORA") or "LORA"
    r = raw.get("r", 8)
    if not _is_number(r, integer=True) or r <= 0:
        raise bad("r", "a positive integer")
    alpha = raw.get("lora_alpha", 8)
    if not _is_number(alpha, integer=False) or alpha <= 0:
        raise bad("lora_alpha", "a positive number")
    target = raw.get("target_modules")
    if target is not None and not isinstance(target, str):
        if not isinstance(target, list) or not all(isinstance(t, str) for t in target):
            raise bad("target_modules", "a list of module names, a regex string, or null")
        target = tuple(target)
    bias = get_str("bias", default="none") or "none"
    if bias not in ("none", "all", "lora_only"):
        raise bad("bias", "one of 'none', 'all', 'lora_only'")
    return AdapterInfo(
        adapter_dir=adapter,
        peft_type=peft_type,
        task_type=get_str("task_type", default=None),
        base_model_name_or_path=get_str("base_model_name_or_path", default=None),
        r=int(r),
        lora_alpha=alpha,
        target_modules=target,
        use_rslora=get_bool("use_rslora"),
        use_dora=get_bool("use_dora"),
        rank_pattern=get_pattern("rank_pattern", int),
        alpha_pattern=get_pattern("alpha_pattern", float),
        fan_in_fan_out=get_bool("fan_in_fan_out"),
        modules_to_save=get_names("modules_to_save"),
        bias=bias,
        raw=MappingProxyType(raw),
    )


def _is_number(value: object, *, integer: bool) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) if integer else isinstance(value, int | float)


def _config_problems(info: AdapterInfo) -> list[str]:
    problems: list[str] = []
    if info.peft_type != "LORA":
        problems.append(f"peft_type is {info.peft_type!r}, not 'LORA'")
    if info.use_dora:
        problems.append("DoRA (use_dora=true) rescales every merged weight by a learned magnitude")
    if info.modules_to_save:
        problems.append(
            f"modules_to_save={list(info.modules_to_save)} replaces whole modules with trained copies"
        )
    if info.bias != "none":
        problems.append(f"bias={info.bias!r}: the adapter carries trained base biases")
    if info.raw.get("init_lora_weights") == "mica":
        problems.append("init_lora_weights='mica' is a LoRA variant")
    for key in sorted(set(info.raw) - _HARMLESS_FIELDS - _HANDLED_FIELDS):
        value = info.raw[key]
        if value not in (None, False, {}, [], 0, ""):
            problems.append(f"{key}={value!r} changes how peft merges (or is unknown to this merge)")
    return problems


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


# --- the plan: which base tensor each adapter module changes, and how ------------------------------------

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


@dataclass(frozen=True)
class _LoraModule:
    module: str  # name in the base model, as peft's rank_pattern/alpha_pattern see it
    base: _Tensor
    a: _Tensor
    b: _Tensor
    scaling: float


@dataclass(frozen=True)
class _Plan:
    tensors: tuple[_Tensor, ...]  # every base tensor, in file order
    lora: Mapping[str, _LoraModule]  # base tensor name -> the adapter module merged into it
    fan_in_fan_out: bool


def merge_problems(info: AdapterInfo, base_dir: str | Path) -> list[str]:
    """Reasons the streaming merge cannot reproduce peft exactly; empty when it can.

    Only headers and JSON are read. Raises AdapterError / ModelSourceError when neither the streaming
    merge nor peft could merge (no weights at all, an adapter whose ranks contradict its config).
    """
    return _plan(info, Path(base_dir))[1]


def _plan(info: AdapterInfo, base_dir: Path) -> tuple[_Plan | None, list[str]]:
    problems = _config_problems(info)
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
    if base_files is None or not adapter_file.is_file():
        return None, problems

    base: dict[str, _Tensor] = {}
    for path in base_files:
        for name, tensor in _read_header(path, MergeError).items():
            if name in base:
                raise MergeError(
                    f"{path}: tensor {name!r} is also in {base[name].file.name}; the checkpoint is inconsistent, download it again."
                )
            base[name] = tensor
    adapter = _read_header(adapter_file, AdapterError)
    problems += _fan_in_fan_out_problems(info, base_dir)

    pairs: dict[str, dict[str, _Tensor]] = {}
    others: list[str] = []
    for name, tensor in adapter.items():
        match = _LORA_KEY.match(name)
        if match is None:
            others.append(name)
        else:
            pairs.setdefault(match["module"], {})[match["part"]] = tensor
    embeddings = [n for n in others if ".lora_embedding_" in n]
    if embeddings:
        problems.append(f"LoRA on embeddings ({len(embeddings)} tensors, e.g. {embeddings[0]})")
    rest = [n for n in others if ".lora_embedding_" not in n]
    if rest:
        problems.append(f"adapter tensors that are not lora_A/lora_B weights: {_few(rest)}")

    lora: dict[str, _LoraModule] = {}
    for module, parts in sorted(pairs.items()):
        if set(parts) != {"A", "B"}:
            raise AdapterError(
                f"{adapter_file}: {module} has lora_{''.join(parts)} but not both A and B; the adapter file is incomplete."
            )
        a, b = parts["A"], parts["B"]
        if len(a.shape) != 2 or len(b.shape) != 2:
            problems.append(f"{module} is not a linear layer (lora_A shape {list(a.shape)})")
            continue
        r, _ = info.rank_and_alpha(module)
        if a.shape[0] != r or b.shape[1] != r:
            raise AdapterError(
                f"{adapter_file}: {module} has rank {a.shape[0]} (lora_A {list(a.shape)}, lora_B {list(b.shape)}) "
                f"but adapter_config.json gives r={r}; fix r/rank_pattern or re-save the adapter."
            )
        target = _base_tensor_for(module, base)
        if isinstance(target, str):
            problems.append(target)
            continue
        expected = (a.shape[1], b.shape[0]) if info.fan_in_fan_out else (b.shape[0], a.shape[1])
        if target.shape != expected:
            problems.append(
                f"{target.name} has shape {list(target.shape)} but the adapter's B@A "
                f"{'transposed ' if info.fan_in_fan_out else ''}is {list(expected)}"
            )
        elif (
            target.dtype not in _MERGEABLE_DTYPES
            or a.dtype not in _MERGEABLE_DTYPES
            or b.dtype not in _MERGEABLE_DTYPES
        ):
            problems.append(f"{target.name} is {target.dtype} (quantized or not floating point)")
        elif target.name in lora:
            problems.append(f"{target.name} is targeted by both {lora[target.name].module} and {module}")
        else:
            lora[target.name] = _LoraModule(module, target, a, b, info.scaling(module))
    if sys.byteorder != "little":
        problems.append("this machine is big-endian; safetensors data is little-endian")
    if problems:
        return None, problems
    return _Plan(tuple(sorted(base.values(), key=_file_order(base_files))), lora, info.fan_in_fan_out), []


def _file_order(files: Sequence[Path]) -> Callable[[_Tensor], tuple[int, int]]:
    rank = {f: i for i, f in enumerate(files)}
    return lambda t: (rank[t.file], t.start)


def _base_tensor_for(module: str, base: Mapping[str, _Tensor]) -> _Tensor | str:
    """The base tensor `<module>.weight`, allowing for a checkpoint saved with or without the model prefix.

    Returns a problem string when nothing (or more than one tensor) matches.
    """
    exact = base.get(f"{module}.weight")
    if exact is not None:
        return exact
    # Checkpoint without the top-level prefix (`layers.0...` for a `model.layers.0...` module).
    _, _, tail = module.partition(".")
    if tail and f"{tail}.weight" in base:
        return base[f"{tail}.weight"]
    # Checkpoint with an extra prefix (`transformer.h.0...` for an `h.0...` module).
    suffix = f".{module}.weight"
    found = [t for n, t in base.items() if n.endswith(suffix)]
    if len(found) == 1:
        return found[0]
    if found:
        return f"adapter module {module} matches several base tensors: {_few([t.name for t in found])}"
    return f"adapter module {module} matches no base tensor (looked for {module}.weight)"


def _fan_in_fan_out_problems(info: AdapterInfo, base_dir: Path) -> list[str]:
    try:
        model_type = json.loads((base_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError, AttributeError):
        model_type = None
    conv1d = model_type in _CONV1D_MODEL_TYPES
    if info.fan_in_fan_out and not conv1d:
        return [
            f"fan_in_fan_out=true on model_type {model_type!r}: peft decides per layer whether to transpose"
        ]
    if conv1d and not info.fan_in_fan_out:
        return [
            f"fan_in_fan_out=false on model_type {model_type!r}, whose Conv1D layers peft transposes anyway"
        ]
    return []


def _few(names: Sequence[str], n: int = 3) -> str:
    return ", ".join(names[:n]) + (f" (+{len(names) - n} more)" if len(names) > n else "")


# --- the streaming merge -----------------------------------------------------------------------------------


def merge_lora_streaming(
    base_dir: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: ProgressCallback | None = None,
) -> MergeReport:
    """Write base + LoRA into `out_dir` as safetensors shards, one tensor in memory at a time.

    Each targeted weight becomes `W + (B @ A) * scaling` computed in float32 and rounded once to W's
    dtype, exactly as peft's merge_and_unload; every other tensor is copied byte for byte. Raises
    AdapterError listing the problems when the merge cannot be exact (use `merge` for the fallback).
    """
    base, out = Path(base_dir), Path(out_dir)
    info = inspect_adapter(adapter_dir)
    plan, problems = _plan(info, base)
    if plan is None:
        raise AdapterError(
            f"{info.adapter_dir}: the streaming merge cannot be exact: {'; '.join(problems)}. "
            "Use merge(..., fallback='peft') to merge with peft instead."
        )
    if max_shard_bytes <= 0:
        raise ValueError(f"max_shard_bytes must be positive, got {max_shard_bytes}")
    _prepare_out_dir(out)
    shards = _assign_shards(plan.tensors, max_shard_bytes)
    names = (
        [SAFE_SINGLE]
        if len(shards) == 1
        else [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]
    )
    log.info(
        "merge: streaming %d tensors (%d with LoRA) from %s into %d shard(s) in %s",
        len(plan.tensors), len(plan.lora), base, len(shards), out,
    )  # fmt: skip
    warnings: list[str] = []
    try:
        bytes_written = _write_shards(out, names, shards, plan, progress, warnings)
    except BaseException as exc:
        # Never leave half a model behind for a later step to upload.
        for name in (*names, SAFE_INDEX):
            (out / name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise MergeError(
                f"{out}: writing the merged model failed ({exc}); free disk space or fix permissions and retry."
            ) from exc
        raise
    _copy_side_files(base, info.adapter_dir, out, model_files=True)
    return MergeReport(
        method="streaming",
        tensors_total=len(plan.tensors),
        tensors_merged=len(plan.lora),
        shards=tuple(names),
        bytes_written=bytes_written,
        warnings=tuple(warnings),
    )


def _write_shards(
    out: Path,
    names: Sequence[str],
    shards: Sequence[Sequence[_Tensor]],
    plan: _Plan,
    progress: ProgressCallback | None,
    warnings: list[str],
) -> int:
    total = len(plan.tensors)
    done = 0
    bytes_written = 0
    weight_map: dict[str, str] = {}
    with _FileReader() as reader:
        for shard_name, shard in zip(names, shards, strict=True):
            for tensor in _write_shard(out / shard_name, shard, plan, reader, warnings):
                done += 1
                weight_map[tensor.name] = shard_name
                if progress is not None:
                    progress(done, total, shard_name)
            size = (out / shard_name).stat().st_size
            bytes_written += size
            log.info("merge: wrote %s (%d/%d tensors, %.1f MB)", shard_name, done, total, size / 1e6)
    if len(names) > 1:
        index = {
            "metadata": {"total_size": sum(t.nbytes for t in plan.tensors)},
            "weight_map": dict(sorted(weight_map.items())),
        }
        (out / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return bytes_written


def _prepare_out_dir(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stale = [
        p.name for p in out.iterdir() if p.name.endswith((".safetensors", ".bin")) or p.name == SAFE_INDEX
    ]
    if stale:
        raise MergeError(
            f"{out}: already holds model weights ({_few(stale)}); merge into an empty directory."
        )


def _assign_shards(tensors: Sequence[_Tensor], max_shard_bytes: int) -> list[list[_Tensor]]:
    # Greedy in file order, like transformers: a tensor larger than the limit gets a shard of its own.
    shards: list[list[_Tensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def _write_shard(
    path: Path, shard: Sequence[_Tensor], plan: _Plan, reader: _FileReader, warnings: list[str]
) -> Iterator[_Tensor]:
    """Write one output shard: the header first (sizes never change), then each tensor as it is produced."""
    # Widest dtypes first keeps every tensor aligned to its element size, as safetensors' writer does.
    ordered = sorted(shard, key=lambda t: -_DTYPE_BYTES.get(t.dtype, 1))
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
    merged_count = 0
    try:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deploygate-merge-writer") as writer:
            writes.append(writer.submit(_write_all, fd, struct.pack("<Q", len(encoded)) + encoded))
            for tensor in ordered:
                module = plan.lora.get(tensor.name)
                if module is None:
                    writes.append(writer.submit(reader.copy_to, tensor, fd))
                else:
                    slot = merged_count % 2
                    merged_count += 1
                    previous = in_flight[slot]
                    if previous is not None:
                        previous.result()  # the writer must be done with that buffer before it is refilled
                    merged = _merged_weight(module, plan.fan_in_fan_out, reader, slot, warnings)
                    future = writer.submit(_write_all, fd, merged.view(-1).view(_uint8()).numpy().data)
                    in_flight[slot] = future
                    writes.append(future)
                yield tensor
                if writes[0].done():
                    writes.pop(0).result()  # surface a write error early
            for write in writes:
                write.result()
    finally:
        os.close(fd)  # a failed shard is removed by merge_lora_streaming, with the others


def _merged_weight(
    module: _LoraModule, fan_in_fan_out: bool, reader: _FileReader, slot: int, warnings: list[str]
) -> torch.Tensor:
    """peft's merge for one linear layer, on CPU, with the same operations in the same order.

    peft (autocast_adapter_dtype) holds A and B in float32, so get_delta_weight is
    `transpose(B @ A, fan_in_fan_out) * scaling` in float32, and `weight.data += delta` computes
    float32(W) + delta and rounds once to W's dtype: `(W.float() + delta).to(W.dtype)`. The weight and
    the delta live in buffers reused from tensor to tensor (fresh 100 MB allocations cost more in page
    faults than the arithmetic); out= and in-place variants run the same kernels, so the bits match.
    """
    import torch

    weight = reader.tensor(module.base, slot=slot)
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
        if fan_in_fan_out:
            delta = delta.T
        delta.mul_(module.scaling)
        _add_into(weight, delta)
    return weight


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


def _add_into(weight: torch.Tensor, delta: torch.Tensor) -> None:
    """`weight += delta` (float32 delta) with the result peft's mixed-dtype in-place add gets.

    That add computes float32(W) + delta and rounds once to W's dtype, element by element, through a
    slow per-element casting loop. Upcasting a block of rows, adding in float32 and copying back does the
    same arithmetic (exact upcast, one float32 add, one round-to-nearest-even) with vectorised kernels,
    4-5x faster. Elementwise, so splitting into blocks cannot change a bit.
    """
    import torch

    if weight.dtype not in (torch.bfloat16, torch.float16):
        weight.add_(delta)  # float32/float64: one dtype (or a wider one), the plain add is already fast
        return
    rows = max(1, _ADD_CHUNK // max(1, weight.shape[-1]))
    buffer = torch.empty(rows * weight.shape[-1], dtype=torch.float32)
    for start in range(0, weight.shape[0], rows):
        block = weight[start : start + rows]
        work = buffer[: block.numel()].view(block.shape)
        work.copy_(block)
        work.add_(delta[start : start + rows])
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


# --- side files, peft reference, fallback ------------------------------------------------------------------


def _copy_side_files(base_dir: Path, adapter_dir: Path, out: Path, *, model_files: bool) -> list[str]:
    """Copy config/generation config (from the base) and the tokenizer (the adapter's if it has one)."""
    copied: list[str] = []
    if model_files:
        for name in MODEL_FILES:
            if (base_dir / name).is_file():
                shutil.copyfile(base_dir / name, out / name)
                copied.append(name)
    has_own = any((adapter_dir / m).is_file() for m in _TOKENIZER_MARKERS)
    source = adapter_dir if has_own else base_dir
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
            copied.append(name)
    return copied


def merge_with_peft(base_dir: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> MergeReport:
    """The reference and fallback: transformers loads the base as stored, peft merges, save_pretrained writes.

    Holds the whole model in memory; use it when `merge_problems` is not empty.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base, out = Path(base_dir), Path(out_dir)
    info = inspect_adapter(adapter_dir)
    _prepare_out_dir(out)
    # dtype="auto" keeps the dtype the checkpoint was saved in (bf16 stays bf16).
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    peft_model = PeftModel.from_pretrained(model, str(info.adapter_dir))
    merged_modules = sum(1 for name, _ in peft_model.named_modules() if name.endswith(".lora_A"))
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out)
    del model, peft_model, merged
    _copy_side_files(base, info.adapter_dir, out, model_files=False)
    shards = tuple(sorted(p.name for p in out.glob("*.safetensors")))
    return MergeReport(
        method="peft",
        tensors_total=sum(len(_read_header(out / s, MergeError)) for s in shards),
        tensors_merged=merged_modules,
        shards=shards,
        bytes_written=sum((out / s).stat().st_size for s in shards),
    )


def merge(
    base_dir: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    fallback: Fallback = "peft",
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    progress: ProgressCallback | None = None,
) -> MergeReport:
    """Merge by streaming when it is exact; otherwise merge with peft (fallback="peft") or refuse ("error")."""
    if fallback not in ("peft", "error"):
        raise AdapterError(f"merge fallback must be 'peft' or 'error', got {fallback!r}; pick one of them.")
    info = inspect_adapter(adapter_dir)
    problems = merge_problems(info, base_dir)
    if not problems:
        return merge_lora_streaming(
            base_dir, adapter_dir, out_dir, max_shard_bytes=max_shard_bytes, progress=progress
        )
    reasons = "; ".join(problems)
    if fallback == "error":
        raise AdapterError(
            f"{info.adapter_dir}: the streaming merge cannot be exact: {reasons}. "
            "Allow the peft fallback (merge fallback 'peft') or set merge: false to push the adapter only."
        )
    log.warning("merge: falling back to peft merge_and_unload (loads the whole model): %s", reasons)
    report = merge_with_peft(base_dir, adapter_dir, out_dir)
    return dataclasses.replace(
        report, warnings=(*report.warnings, *(f"merged with peft: {p}" for p in problems))
    )


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
