"""deploygate.adapters.lora_merge without torch: adapter_config.json validation, pattern resolution, what each config field
sends to the fallback or refuses, problem listing from the file headers.

Safetensors files here are written by hand (header + bytes), so these tests import no ML library; the
bit-for-bit comparisons with peft live in tests/integration/test_merge.py and test_merge_matrix.py.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from deploygate.adapters.lora_merge import AdapterInfo, inspect_adapter, merge_problems, merge_refusal
from deploygate.core.errors import AdapterError, ModelSourceError

PREFIX = "base_model.model."


def write_safetensors(path: Path, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """A valid safetensors file of zero bytes per tensor value: name -> (dtype, shape)."""
    sizes = {"F32": 4, "BF16": 2, "F16": 2, "I8": 1}
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, (dtype, shape) in tensors.items():
        n = sizes[dtype]
        for d in shape:
            n *= d
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + n]}
        offset += n
    encoded = json.dumps(header).encode()
    encoded += b" " * (-len(encoded) % 8)
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(offset))


def write_adapter(
    directory: Path, config: dict[str, Any], tensors: dict[str, tuple[str, list[int]]] | None
) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    full = {
        "peft_type": "LORA",
        "r": 2,
        "lora_alpha": 4,
        "target_modules": ["q_proj"],
        "bias": "none",
        **config,
    }
    (directory / "adapter_config.json").write_text(json.dumps(full))
    if tensors is not None:
        write_safetensors(directory / "adapter_model.safetensors", tensors)
    return directory


def lora_pair(module: str, r: int = 2, in_f: int = 4, out_f: int = 4) -> dict[str, tuple[str, list[int]]]:
    return {
        f"{PREFIX}{module}.lora_A.weight": ("F32", [r, in_f]),
        f"{PREFIX}{module}.lora_B.weight": ("F32", [out_f, r]),
    }


def write_base(directory: Path, tensors: dict[str, tuple[str, list[int]]], model_type: str = "llama") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps({"model_type": model_type}))
    write_safetensors(directory / "model.safetensors", tensors)
    return directory


Q = "model.layers.0.self_attn.q_proj"


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write_base(
        tmp_path / "base",
        {
            f"{Q}.weight": ("BF16", [4, 4]),
            "model.embed_tokens.weight": ("BF16", [8, 4]),
            "lm_head.weight": ("BF16", [8, 4]),
        },
    )


# --- inspect_adapter -------------------------------------------------------------------------------------


def test_inspect_adapter_reads_the_config_with_peft_defaults(tmp_path: Path) -> None:
    adapter = tmp_path / "a"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "target_modules": ["q_proj", "v_proj"]})
    )
    info = inspect_adapter(adapter)
    assert (info.r, info.lora_alpha, info.bias, info.fan_in_fan_out) == (8, 8, "none", False)
    assert info.target_modules == ("q_proj", "v_proj")
    assert (info.use_rslora, info.use_dora, info.modules_to_save) == (False, False, None)
    assert dict(info.rank_pattern) == {} and info.raw["peft_type"] == "LORA"


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"r": 0}, "'r'"),
        ({"r": "8"}, "'r'"),
        ({"r": True}, "'r'"),
        ({"lora_alpha": -1}, "'lora_alpha'"),
        ({"use_rslora": "yes"}, "'use_rslora'"),
        ({"bias": "some"}, "'bias'"),
        ({"rank_pattern": {"q_proj": 0}}, "'rank_pattern'"),
        ({"rank_pattern": {"q_proj": 2.5}}, "'rank_pattern'"),
        ({"alpha_pattern": ["q_proj"]}, "'alpha_pattern'"),
        ({"rank_pattern": {"q_proj(": 2}}, "'rank_pattern'"),
        ({"modules_to_save": "lm_head"}, "'modules_to_save'"),
        ({"target_modules": 3}, "'target_modules'"),
    ],
)
def test_inspect_adapter_names_the_file_and_the_bad_value(
    tmp_path: Path, config: dict[str, Any], named: str
) -> None:
    adapter = write_adapter(tmp_path / "a", config, None)
    with pytest.raises(AdapterError) as excinfo:
        inspect_adapter(adapter)
    message = str(excinfo.value)
    assert str(adapter / "adapter_config.json") in message and named in message
    assert "\n" not in message


def test_inspect_adapter_without_a_config_says_where_to_point(tmp_path: Path) -> None:
    with pytest.raises(AdapterError, match=r"adapter_config\.json: not found; point"):
        inspect_adapter(tmp_path)


def test_inspect_adapter_rejects_broken_json(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(AdapterError, match="not valid JSON"):
        inspect_adapter(tmp_path)


# --- rank/alpha patterns, as peft's get_pattern_key resolves them --------------------------------------------


def info_with(tmp_path: Path, **config: Any) -> AdapterInfo:
    return inspect_adapter(write_adapter(tmp_path / "a", config, None))


@pytest.mark.parametrize(
    ("module", "expected_r", "expected_alpha"),
    [
        ("model.layers.0.self_attn.q_proj", 4, 16),  # suffix key on a dot boundary
        ("model.layers.1.self_attn.q_proj", 4, 16),
        ("model.layers.0.self_attn.xq_proj", 8, 16),  # not on a dot boundary: no match
        ("model.layers.0.mlp.down_proj", 2, 32),  # regex key, first match in file order wins
        ("model.layers.1.mlp.down_proj", 3, 32),  # the later suffix key
        ("model.layers.1.self_attn.o_proj", 8, 5),
    ],
)
def test_rank_and_alpha_follow_peft_pattern_matching(
    tmp_path: Path, module: str, expected_r: int, expected_alpha: float
) -> None:
    info = info_with(
        tmp_path,
        r=8,
        lora_alpha=16,
        rank_pattern={"q_proj": 4, r"layers\.0\.mlp\..*": 2, "down_proj": 3},
        alpha_pattern={"o_proj": 5, "mlp.down_proj": 32},
    )
    assert info.rank_and_alpha(module) == (expected_r, expected_alpha)


def test_scaling_is_alpha_over_r_or_over_sqrt_r_with_rslora(tmp_path: Path) -> None:
    assert info_with(tmp_path, r=16, lora_alpha=8).scaling(Q) == 0.5
    assert info_with(tmp_path, r=16, lora_alpha=8, use_rslora=True).scaling(Q) == 2.0


# --- merge_problems ------------------------------------------------------------------------------------------


def test_a_plain_lora_adapter_has_no_problems(tmp_path: Path, base: Path) -> None:
    info = inspect_adapter(write_adapter(tmp_path / "a", {}, lora_pair(Q)))
    assert merge_problems(info, base) == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"bias": "all"}, "bias='all'"),
        ({"bias": "lora_only"}, "bias='lora_only'"),
        ({"lora_bias": True}, "lora_bias=True"),
        ({"init_lora_weights": "pissa"}, "residual base"),
        ({"init_lora_weights": "olora"}, "residual base"),
        ({"init_lora_weights": "mica"}, "mica"),
        ({"init_lora_weights": "some_new_scheme"}, "some_new_scheme"),
        ({"trainable_token_indices": [1, 2]}, "trainable_token_indices"),
        ({"target_parameters": ["experts.gate_up_proj"]}, "target_parameters"),
        ({"ensure_weight_tying": True}, "ensure_weight_tying"),
        ({"use_qalora": True}, "use_qalora"),
        ({"kasa_config": {"r": 2}}, "kasa_config"),
        ({"some_future_field": 1}, "some_future_field=1 is unknown"),
        # Unknown means unknown: even a value that looks like "off" goes to peft.
        ({"some_future_flag": False}, "some_future_flag=False is unknown"),
    ],
)
def test_config_fields_that_need_peft_are_named(
    tmp_path: Path, base: Path, config: dict[str, Any], expected: str
) -> None:
    info = inspect_adapter(write_adapter(tmp_path / "a", config, lora_pair(Q)))
    problems = merge_problems(info, base)
    assert any(expected in p for p in problems), problems
    assert merge_refusal(info) is None


@pytest.mark.parametrize(
    "config",
    [
        {"init_lora_weights": True},
        {"init_lora_weights": False},
        {"init_lora_weights": "gaussian"},
        {"init_lora_weights": "orthogonal"},
        {"init_lora_weights": "eva", "eva_config": {"rho": 2.0}},
        {"lora_dropout": 0.1, "inference_mode": True, "peft_version": "0.21.0", "revision": None},
        {"layers_to_transform": [0], "layers_pattern": None, "exclude_modules": ["k_proj"]},
        {"fan_in_fan_out": True},  # peft itself turns it off for nn.Linear and on for Conv1D, layer by layer
        {"task_type": "CAUSAL_LM", "megatron_core": "megatron.core", "loftq_config": {}},
        {"task_type": "SEQ_2_SEQ_LM", "use_rslora": True, "alpha_pattern": {"q_proj": 3}},
    ],
)
def test_config_fields_the_streaming_merge_reproduces(
    tmp_path: Path, base: Path, config: dict[str, Any]
) -> None:
    info = inspect_adapter(write_adapter(tmp_path / "a", config, lora_pair(Q)))
    assert merge_problems(info, base) == []


@pytest.mark.parametrize(
    ("config", "why", "fix"),
    [
        (
            {"init_lora_weights": "pissa_niter_4"},
            "randomised SVD",
            "path_initial_model_for_weight_conversion",
        ),
        ({"init_lora_weights": "corda"}, "preprocess_corda", "path_initial_model_for_weight_conversion"),
        ({"init_lora_weights": "lora_ga"}, "residual base", "path_initial_model_for_weight_conversion"),
        ({"init_lora_weights": "loftq"}, "LoftQ-quantized base", "set base-model"),
        ({"layer_replication": [[0, 1]]}, "share one base weight", "merge: false"),
        ({"megatron_config": {"tp": 2}}, "Megatron", "merge: false"),
        ({"alora_invocation_tokens": [1, 2]}, "invocation tokens", "merge: false"),
        ({"arrow_config": {"top_k": 2}}, "routes every token", "merge: false"),
        ({"peft_type": "PREFIX_TUNING"}, "virtual tokens", "merge: false"),
        ({"task_type": "SEQ_CLS"}, "task head", "merge: false"),
    ],
)
def test_adapters_no_merge_can_reproduce_are_refused_in_one_line(
    tmp_path: Path, base: Path, config: dict[str, Any], why: str, fix: str
) -> None:
    adapter = write_adapter(tmp_path / "a", config, lora_pair(Q))
    info = inspect_adapter(adapter)
    refusal = merge_refusal(info)
    assert refusal is not None and why in refusal and fix in refusal, refusal
    assert refusal.startswith(f"{adapter / 'adapter_config.json'}: cannot merge: ") and "\n" not in refusal
    with pytest.raises(AdapterError) as excinfo:
        merge_problems(info, base)
    assert str(excinfo.value) == refusal


def test_moe_target_parameters_reach_the_fallback_without_a_rank_error(tmp_path: Path, base: Path) -> None:
    # peft 0.21 saves MoE expert LoRA with r * n_experts rows: not the config's r, and not an error.
    tensors = {
        f"{PREFIX}model.layers.0.mlp.experts.lora_A.weight": ("F32", [8, 4]),
        f"{PREFIX}model.layers.0.mlp.experts.lora_B.weight": ("F32", [4, 8]),
        **lora_pair(Q),
    }
    info = inspect_adapter(write_adapter(tmp_path / "a", {"target_parameters": ["gate_up_proj"]}, tensors))
    assert [p for p in merge_problems(info, base)] == [
        "target_parameters=['gate_up_proj']: LoRA on raw parameters (MoE experts) rather than on linear layers"
    ]


def test_a_non_lora_peft_type_is_a_problem(tmp_path: Path, base: Path) -> None:
    tensors = {f"{PREFIX}{Q}.ia3_l": ("F32", [4, 1])}
    info = inspect_adapter(write_adapter(tmp_path / "a", {"peft_type": "IA3"}, tensors))
    assert merge_problems(info, base) == ["peft_type='IA3' is merged by peft"]


def test_lora_on_embeddings_is_a_problem(tmp_path: Path, base: Path) -> None:
    tensors = {
        f"{PREFIX}model.embed_tokens.lora_embedding_A": ("F32", [2, 8]),
        f"{PREFIX}model.embed_tokens.lora_embedding_B": ("F32", [4, 2]),
    }
    info = inspect_adapter(write_adapter(tmp_path / "a", {}, tensors))
    assert any("LoRA on embeddings" in p for p in merge_problems(info, base))


def test_pickled_weights_are_problems(tmp_path: Path, base: Path) -> None:
    bin_base = tmp_path / "binbase"
    bin_base.mkdir()
    (bin_base / "pytorch_model.bin").write_bytes(b"pickle")
    info = inspect_adapter(write_adapter(tmp_path / "a", {}, lora_pair(Q)))
    assert any("not safetensors" in p for p in merge_problems(info, bin_base))
    bin_adapter = write_adapter(tmp_path / "b", {}, None)
    (bin_adapter / "adapter_model.bin").write_bytes(b"pickle")
    assert any("adapter_model.bin" in p for p in merge_problems(inspect_adapter(bin_adapter), base))


def test_missing_weights_are_errors_not_problems(tmp_path: Path, base: Path) -> None:
    info = inspect_adapter(write_adapter(tmp_path / "a", {}, lora_pair(Q)))
    with pytest.raises(ModelSourceError, match="no model weights"):
        merge_problems(info, tmp_path / "empty")
    with pytest.raises(AdapterError, match=r"no adapter_model\.safetensors"):
        merge_problems(inspect_adapter(write_adapter(tmp_path / "b", {}, None)), base)


def test_a_module_matching_no_base_tensor_is_a_problem(tmp_path: Path, base: Path) -> None:
    info = inspect_adapter(write_adapter(tmp_path / "a", {}, lora_pair("model.layers.9.self_attn.q_proj")))
    assert merge_problems(info, base) == [
        "adapter module model.layers.9.self_attn.q_proj matches no base tensor "
        "(looked for model.layers.9.self_attn.q_proj.weight)"
    ]


def test_a_checkpoint_saved_without_the_model_prefix_goes_to_peft(tmp_path: Path) -> None:
    # transformers maps it on load (and writes the prefix back); the streaming merge only takes exact names.
    bare = write_base(tmp_path / "bare", {"layers.0.self_attn.q_proj.weight": ("BF16", [4, 4])})
    info = inspect_adapter(write_adapter(tmp_path / "a", {}, lora_pair(Q)))
    assert merge_problems(info, bare) == [
        f"adapter module {Q} matches no base tensor (looked for {Q}.weight)"
    ]


def test_shape_and_dtype_mismatches_are_problems(tmp_path: Path) -> None:
    base = write_base(
        tmp_path / "b", {f"{Q}.weight": ("BF16", [6, 4]), "model.layers.0.mlp.up_proj.weight": ("I8", [4, 4])}
    )
    tensors = {**lora_pair(Q), **lora_pair("model.layers.0.mlp.up_proj")}
    problems = merge_problems(inspect_adapter(write_adapter(tmp_path / "a", {}, tensors)), base)
    assert any("shape [6, 4]" in p for p in problems)
    assert any("is I8" in p for p in problems)


def test_a_rank_contradicting_the_config_is_an_error(tmp_path: Path, base: Path) -> None:
    info = inspect_adapter(write_adapter(tmp_path / "a", {"r": 3}, lora_pair(Q, r=2)))
    with pytest.raises(AdapterError, match=r"has rank 2 .* gives r=3"):
        merge_problems(info, base)


def test_conv1d_orientation_is_left_to_peft(tmp_path: Path) -> None:
    # A Conv1D weight is stored (in, out): both orientations pass the header check, and peft's own layer
    # (asked on the meta device) decides the transpose, whatever fan_in_fan_out the config says.
    gpt2 = write_base(
        tmp_path / "g", {"transformer.h.0.attn.c_attn.weight": ("F32", [4, 12])}, model_type="gpt2"
    )
    tensors = lora_pair("transformer.h.0.attn.c_attn", in_f=4, out_f=12)
    for flag in (False, True):
        info = inspect_adapter(write_adapter(tmp_path / f"a{flag}", {"fan_in_fan_out": flag}, tensors))
        assert merge_problems(info, gpt2) == []
    wrong = lora_pair("transformer.h.0.attn.c_attn", in_f=4, out_f=8)
    info = inspect_adapter(write_adapter(tmp_path / "wrong", {}, wrong))
    assert any("has shape [4, 12]" in p for p in merge_problems(info, gpt2))


def test_importing_merge_does_not_import_torch() -> None:
    code = (
        "import sys, deploygate.adapters.lora_merge\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'safetensors') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
