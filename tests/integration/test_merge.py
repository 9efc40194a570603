"""The streaming LoRA merge against peft's merge_and_unload on real tiny models: equal bit for bit.

Models and adapters are built locally (tests/modelfactory.py, tests/merge_matrix.py): random weights, real
peft adapters with non-zero B. Fallback cases (DoRA, modules_to_save, embeddings, raw PiSSA, IA3, pickled
weights) go through peft; the checks every merge ends with, and the refusals, are shown failing here too.
The whole architecture x configuration x dtype matrix is tests/integration/test_merge_matrix.py.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")
pytest.importorskip("transformers")

from deploygate.adapters.lora_merge import (  # noqa: E402
    MergeReport,
    copy_adapter_only,
    inspect_adapter,
    merge,
    merge_lora_streaming,
    merge_problems,
    merge_with_peft,
)
from deploygate.core.errors import AdapterError, MergeError  # noqa: E402
from tests import merge_matrix as mm  # noqa: E402
from tests.modelfactory import make_lora_adapter, make_tiny_gpt2, make_tiny_llama  # noqa: E402

GPT2_TARGETS = ("c_attn", "c_proj", "c_fc")


def load_dir(directory: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    tensors: dict[str, Any] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def raw_tensors(directory: Path) -> dict[str, bytes]:
    """name -> the tensor's bytes exactly as stored, straight from the safetensors layout."""
    return {name: data for name, (_, _, data) in mm.raw_tensors(directory).items()}


def assert_same_tensors(ours: Path, reference: Path) -> None:
    a, b = load_dir(ours), load_dir(reference)
    assert a.keys() == b.keys()
    different = [k for k in a if a[k].dtype != b[k].dtype or not torch.equal(a[k], b[k])]
    assert different == []


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {
        "llama-bf16": make_tiny_llama(root / "llama-bf16"),
        "llama-fp32": make_tiny_llama(root / "llama-fp32", dtype=torch.float32, seed=1),
        "llama-fp16": make_tiny_llama(root / "llama-fp16", dtype=torch.float16, seed=3),
        "llama-tied": make_tiny_llama(root / "llama-tied", shards=1, seed=2, tie_word_embeddings=True),
        "gpt2": make_tiny_gpt2(root / "gpt2"),
    }


CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "bf16-two-shards": ("llama-bf16", {}),
    "rslora": ("llama-bf16", {"use_rslora": True, "r": 4, "alpha": 7}),
    "rank-alpha-patterns": (
        "llama-bf16",
        {
            "rank_pattern": {"q_proj": 4, r"layers\.1\.mlp\.down_proj": 2},
            "alpha_pattern": {r"^model\.layers\.0\..*v_proj": 3, "o_proj": 5},
        },
    ),
    "bf16-adapter-weights": ("llama-bf16", {"adapter_dtype": torch.bfloat16, "r": 16, "alpha": 8}),
    "fp32-base": ("llama-fp32", {"target_modules": ("q_proj", "v_proj", "down_proj")}),
    "fp16-base": ("llama-fp16", {"alpha": 32}),
    "tied-embeddings": ("llama-tied", {"target_modules": ("q_proj", "up_proj")}),
    "gpt2-conv1d-fan-in-fan-out": ("gpt2", {"target_modules": GPT2_TARGETS, "fan_in_fan_out": True}),
}


@pytest.mark.parametrize("case", CASES)
def test_streaming_merge_equals_peft_bit_for_bit(models: dict[str, Path], tmp_path: Path, case: str) -> None:
    model, options = CASES[case]
    base = models[model]
    adapter = make_lora_adapter(base, tmp_path / "adapter", **options)
    assert merge_problems(inspect_adapter(adapter), base) == []

    ours = merge_lora_streaming(base, adapter, tmp_path / "streaming")
    reference = merge_with_peft(base, adapter, tmp_path / "peft")

    assert_same_tensors(tmp_path / "streaming", tmp_path / "peft")
    assert (ours.method, reference.method) == ("streaming", "peft")
    assert ours.tensors_total == reference.tensors_total == len(load_dir(base))
    assert ours.tensors_merged == reference.tensors_merged > 0
    # The adapter really changed the targeted weights, and only those.
    merged, original = load_dir(tmp_path / "streaming"), load_dir(base)
    changed = {k for k in merged if not torch.equal(merged[k], original[k])}
    assert len(changed) == ours.tensors_merged


def test_a_delta_rounded_before_the_add_would_not_match(models: dict[str, Path], tmp_path: Path) -> None:
    # Guards the test above: the comparison is fine enough to tell one rounding from two.
    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter")
    merge_lora_streaming(base, adapter, tmp_path / "out")
    name = "model.layers.0.self_attn.q_proj"
    weight = load_dir(base)[f"{name}.weight"]
    lora = load_dir(adapter)
    a, b = (lora[f"base_model.model.{name}.lora_{p}.weight"].float() for p in "AB")
    delta = (b @ a) * inspect_adapter(adapter).scaling(name)
    merged = load_dir(tmp_path / "out")[f"{name}.weight"]
    assert torch.equal(merged, (weight.float() + delta).to(weight.dtype))
    assert not torch.equal(merged, weight + delta.to(weight.dtype))


def test_an_adapter_with_nan_is_merged_like_peft_but_reported(
    models: dict[str, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file

    base = models["llama-fp32"]
    adapter = make_lora_adapter(base, tmp_path / "adapter", target_modules=("q_proj",))
    weights = load_file(adapter / "adapter_model.safetensors")
    weights["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"][0, 0] = float("nan")
    save_file(weights, adapter / "adapter_model.safetensors", metadata={"format": "pt"})
    report = merge_lora_streaming(base, adapter, tmp_path / "streaming")
    assert report.warnings == (
        "model.layers.1.self_attn.q_proj: the adapter's lora_A/lora_B hold NaN or inf; the merged weight will too",
    )
    merge_with_peft(base, adapter, tmp_path / "peft")
    ours, reference = load_dir(tmp_path / "streaming"), load_dir(tmp_path / "peft")
    name = "model.layers.1.self_attn.q_proj.weight"
    assert torch.equal(ours[name].isnan(), reference[name].isnan()) and bool(ours[name].isnan().any())
    assert all(torch.equal(ours[k], reference[k]) for k in ours if k != name)


def test_untouched_tensors_are_copied_byte_for_byte(models: dict[str, Path], tmp_path: Path) -> None:
    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter", target_modules=("q_proj", "down_proj"))
    merge_lora_streaming(base, adapter, tmp_path / "out")
    before, after = raw_tensors(base), raw_tensors(tmp_path / "out")
    assert before.keys() == after.keys()
    untouched = [k for k in before if not k.endswith(("q_proj.weight", "down_proj.weight"))]
    assert untouched and all(before[k] == after[k] for k in untouched)
    assert all(before[k] != after[k] for k in before if k not in untouched)


def test_the_merged_model_loads_and_generates_like_peft(models: dict[str, Path], tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter")
    merge_lora_streaming(base, adapter, tmp_path / "streaming")
    merge_with_peft(base, adapter, tmp_path / "peft")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "streaming")
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello model"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    outputs = []
    for directory in ("streaming", "peft"):
        model = AutoModelForCausalLM.from_pretrained(tmp_path / directory, dtype="auto")
        assert model.dtype == torch.bfloat16
        with torch.no_grad():
            generated = model.generate(**prompt, max_new_tokens=5, min_new_tokens=5, do_sample=False)
        assert generated.shape[1] == prompt["input_ids"].shape[1] + 5
        outputs.append(generated)
    assert torch.equal(outputs[0], outputs[1])


def test_output_layout_single_file_and_side_files(models: dict[str, Path], tmp_path: Path) -> None:
    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter")
    report = merge_lora_streaming(base, adapter, tmp_path / "out")
    out = tmp_path / "out"
    assert report.shards == ("model.safetensors",)
    assert not (out / "model.safetensors.index.json").exists()
    assert report.bytes_written == (out / "model.safetensors").stat().st_size
    from safetensors import safe_open

    with safe_open(out / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (base / name).read_bytes()


def test_output_is_sharded_with_an_index_and_reports_progress(
    models: dict[str, Path], tmp_path: Path
) -> None:
    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter")
    calls: list[tuple[int, int, str]] = []
    report = merge_lora_streaming(
        base, adapter, tmp_path / "out", max_shard_bytes=40_000, progress=lambda *a: calls.append(a)
    )
    out = tmp_path / "out"
    assert len(report.shards) > 2
    assert report.shards[0] == f"model-00001-of-{len(report.shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(report.shards)
    assert index["metadata"]["total_size"] == sum(
        t.numel() * t.element_size() for t in load_dir(base).values()
    )
    assert [c[0] for c in calls] == list(range(1, report.tensors_total + 1))
    assert {c[1] for c in calls} == {report.tensors_total} and {c[2] for c in calls} == set(report.shards)
    reference = merge_with_peft(base, adapter, tmp_path / "peft")
    assert reference.shards == ("model.safetensors",)
    assert_same_tensors(out, tmp_path / "peft")


def test_the_adapters_tokenizer_wins_over_the_bases(models: dict[str, Path], tmp_path: Path) -> None:
    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter", with_tokenizer=True)
    config = json.loads((adapter / "tokenizer_config.json").read_text())
    config["model_max_length"] = 77
    (adapter / "tokenizer_config.json").write_text(json.dumps(config))
    merge_lora_streaming(base, adapter, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())["model_max_length"] == 77


def test_a_failed_merge_leaves_no_partial_model(models: dict[str, Path], tmp_path: Path) -> None:
    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter")

    def fail_in_the_second_shard(done: int, total: int, shard: str) -> None:
        if shard.startswith("model-00002"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        merge_lora_streaming(
            base, adapter, tmp_path / "out", max_shard_bytes=40_000, progress=fail_in_the_second_shard
        )
    assert list((tmp_path / "out").iterdir()) == []


def test_refuses_an_output_directory_that_holds_weights(models: dict[str, Path], tmp_path: Path) -> None:
    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model.safetensors").write_bytes(b"old")
    with pytest.raises(MergeError, match="already holds model weights"):
        merge_lora_streaming(base, adapter, tmp_path / "out")


# --- fallback and refusal --------------------------------------------------------------------------------


def _bin_base(models: dict[str, Path], tmp_path: Path) -> Path:
    """The bf16 llama with its weights pickled as pytorch_model.bin instead of safetensors."""
    source = models["llama-bf16"]
    target = tmp_path / "bin-base"
    target.mkdir()
    for path in source.iterdir():
        if not path.name.startswith("model"):
            shutil.copyfile(path, target / path.name)
    torch.save(load_dir(source), target / "pytorch_model.bin")
    return target


FALLBACKS: dict[str, tuple[str, dict[str, Any], str]] = {
    "dora": ("llama-bf16", {"use_dora": True}, "DoRA"),
    "modules-to-save": ("llama-bf16", {"modules_to_save": ["lm_head"]}, "modules_to_save"),
    "embeddings": ("llama-bf16", {"target_modules": ("q_proj", "embed_tokens")}, "LoRA on embeddings"),
    "raw-pissa": ("llama-fp16", {"init_lora_weights": "pissa"}, "residual base"),
}


@pytest.mark.parametrize("case", FALLBACKS)
def test_unmergeable_adapters_fall_back_to_peft_with_a_warning(
    models: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    model, options, reason = FALLBACKS[case]
    base = models[model]
    adapter = make_lora_adapter(base, tmp_path / "adapter", **options)
    with pytest.raises(AdapterError, match=reason):
        merge(base, adapter, tmp_path / "refused", fallback="error")
    with pytest.raises(AdapterError, match="cannot be exact"):
        merge_lora_streaming(base, adapter, tmp_path / "refused")

    with caplog.at_level(logging.WARNING, logger="deploygate.adapters.lora_merge"):
        report = merge(base, adapter, tmp_path / "fallback", fallback="peft")
    assert report.method == "peft"
    assert any(reason in w for w in report.warnings)
    assert any(reason in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    merge_with_peft(base, adapter, tmp_path / "peft")
    assert_same_tensors(tmp_path / "fallback", tmp_path / "peft")
    changed = load_dir(tmp_path / "fallback")
    assert any(not torch.equal(t, load_dir(base)[k]) for k, t in changed.items())


def test_a_pickled_base_is_refused_or_merged_by_peft(models: dict[str, Path], tmp_path: Path) -> None:
    base = _bin_base(models, tmp_path)
    adapter = make_lora_adapter(models["llama-bf16"], tmp_path / "adapter")
    with pytest.raises(AdapterError, match="not safetensors"):
        merge(base, adapter, tmp_path / "refused", fallback="error")
    report = merge(base, adapter, tmp_path / "fallback", fallback="peft")
    assert report.method == "peft"
    merge_lora_streaming(models["llama-bf16"], adapter, tmp_path / "streaming")
    assert_same_tensors(tmp_path / "fallback", tmp_path / "streaming")


def test_a_non_lora_adapter_falls_back_to_peft(models: dict[str, Path], tmp_path: Path) -> None:
    from peft import IA3Config, get_peft_model
    from transformers import AutoModelForCausalLM

    base = models["llama-fp32"]
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base, dtype="auto"),
        IA3Config(
            target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"], task_type="CAUSAL_LM"
        ),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "ia3_" in name:
                param.mul_(1.5)
    model.save_pretrained(tmp_path / "ia3")
    report = merge(base, tmp_path / "ia3", tmp_path / "out")
    assert report.method == "peft" and any("IA3" in w for w in report.warnings)
    assert not torch.equal(
        load_dir(tmp_path / "out")["model.layers.0.self_attn.k_proj.weight"],
        load_dir(base)["model.layers.0.self_attn.k_proj.weight"],
    )


def test_merge_streams_when_it_can(models: dict[str, Path], tmp_path: Path) -> None:
    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter")
    assert merge(base, adapter, tmp_path / "out", fallback="error").method == "streaming"
    with pytest.raises(AdapterError, match="fallback must be"):
        merge(base, adapter, tmp_path / "other", fallback="maybe")  # type: ignore[arg-type]


def test_peft_and_deploygate_resolve_patterns_alike() -> None:
    from peft.utils.other import get_pattern_key

    from deploygate.adapters.lora_merge import _pattern_key

    patterns = {"q_proj": 1, r"layers\.0\.mlp\..*": 2, "down_proj": 3, "^model.layers.1.self_attn.v_proj": 4}
    modules = [
        f"model.layers.{i}.{kind}" for i in (0, 1, 11) for kind in (
            "self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj", "mlp.up_proj", "self_attn.xq_proj"
        )
    ]  # fmt: skip
    assert [_pattern_key(patterns, m) for m in modules] == [
        get_pattern_key(list(patterns), m) for m in modules
    ]


def test_copy_adapter_only_ships_adapter_files_and_a_tokenizer(
    models: dict[str, Path], tmp_path: Path
) -> None:
    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter")
    report: MergeReport = copy_adapter_only(adapter, tmp_path / "out", base_dir=base)
    files = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= files
    assert not any(name.startswith("model") for name in files)
    assert (report.method, report.shards, report.warnings) == (
        "adapter-only",
        ("adapter_model.safetensors",),
        (),
    )
    bare = copy_adapter_only(adapter, tmp_path / "bare")
    assert bare.warnings == ("no tokenizer found to copy beside the adapter",)


# --- peft decides per layer: Conv1D is transposed, nn.Linear is not, whatever the config says -----------------


@pytest.mark.parametrize(
    ("model", "targets", "flag"), [("gpt2", GPT2_TARGETS, False), ("llama-fp32", ("q_proj",), True)]
)
def test_fan_in_fan_out_follows_the_layer_as_peft_does(
    models: dict[str, Path], tmp_path: Path, model: str, targets: tuple[str, ...], flag: bool
) -> None:
    # An adapter config edited to the wrong orientation: peft turns fan_in_fan_out on for Conv1D and off for
    # nn.Linear when it builds each layer, and so does the streaming merge, which asks peft.
    base = models[model]
    adapter = make_lora_adapter(base, tmp_path / "adapter", target_modules=targets, fan_in_fan_out=not flag)
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["fan_in_fan_out"] = flag
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    assert merge(base, adapter, tmp_path / "ours", fallback="error").method == "streaming"
    merge_with_peft(base, adapter, tmp_path / "peft")
    assert_same_tensors(tmp_path / "ours", tmp_path / "peft")


# --- the findings of issue #10, each on its own -------------------------------------------------------------


@pytest.fixture(scope="module")
def matrix_bases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, mm.BuiltBase]:
    root = tmp_path_factory.mktemp("matrix-bases")
    archs = mm.architectures()
    return {
        "t5-fp16": mm.build_base(archs["t5"], "fp16", root),
        "bart-bf16": mm.build_base(archs["bart"], "bf16", root),
        "llama-tied-bf16": mm.build_base(archs["llama-tied"], "bf16", root),
        "mixtral-bf16": mm.build_base(archs["mixtral"], "bf16", root),
    }


def _case(name: str) -> mm.LoraCase:
    return next(c for c in mm.LORA_CASES if c.name == name)


def test_t5_fp16_keeps_wo_in_fp32_as_transformers_loads_it(
    matrix_bases: dict[str, mm.BuiltBase], tmp_path: Path
) -> None:
    base = matrix_bases["t5-fp16"]
    adapter = mm.make_adapter(base, _case("all-linear"), tmp_path / "adapter")
    assert mm.raw_tensors(base.path)["encoder.block.0.layer.1.DenseReluDense.wo.weight"][0] == "F16"
    report = merge(base.path, adapter, tmp_path / "ours", fallback="error")
    assert report.method == "streaming"
    ours = mm.raw_tensors(tmp_path / "ours")
    wo = [n for n in ours if n.endswith("DenseReluDense.wo.weight")]
    assert len(wo) == 4 and {ours[n][0] for n in wo} == {"F32"}
    assert {ours[n][0] for n in ours if n not in wo} == {"F16"}
    assert mm.peft_reference(base, adapter, tmp_path / "peft") is None
    assert mm.differences(tmp_path / "ours", tmp_path / "peft") == []


def test_bart_falls_back_with_its_seq2seq_class_and_keeps_the_encoder(
    matrix_bases: dict[str, mm.BuiltBase], tmp_path: Path
) -> None:
    base = matrix_bases["bart-bf16"]
    # A base that declares only the bare model class still loads with the generation class, never narrower.
    config = json.loads((base.path / "config.json").read_text())
    assert config["architectures"] == ["BartForConditionalGeneration"]
    bare = tmp_path / "bare-base"
    shutil.copytree(base.path, bare)
    (bare / "config.json").write_text(json.dumps({**config, "architectures": ["BartModel"]}))
    adapter = mm.make_adapter(base, _case("dora"), tmp_path / "adapter")
    report = merge(bare, adapter, tmp_path / "ours")
    assert report.method == "peft"
    ours, stored = mm.raw_tensors(tmp_path / "ours"), mm.raw_tensors(base.path)
    assert ours.keys() == stored.keys() and any(n.startswith("model.encoder.") for n in ours)
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["is_encoder_decoder"] is True
    assert mm.peft_reference(base, adapter, tmp_path / "peft") is None
    assert mm.differences(tmp_path / "ours", tmp_path / "peft") == []


def test_a_stored_tied_lm_head_goes_to_peft_and_lm_head_lora_on_it_is_refused(
    matrix_bases: dict[str, mm.BuiltBase], tmp_path: Path
) -> None:
    base = matrix_bases["llama-tied-bf16"]
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= mm.raw_tensors(base.path).keys()
    plain = mm.make_adapter(base, _case("default"), tmp_path / "plain")
    with pytest.raises(AdapterError, match=r"stores both lm_head\.weight and model\.embed_tokens\.weight"):
        merge(base.path, plain, tmp_path / "refused", fallback="error")
    report = merge(base.path, plain, tmp_path / "ours")
    assert report.method == "peft" and "lm_head.weight" not in mm.raw_tensors(tmp_path / "ours")
    assert mm.peft_reference(base, plain, tmp_path / "peft") is None
    assert mm.differences(tmp_path / "ours", tmp_path / "peft") == []

    head = mm.make_adapter(base, _case("lm_head-no-embedding-save"), tmp_path / "head")
    with pytest.raises(AdapterError) as excinfo:
        merge(base.path, head, tmp_path / "head-out")
    message = str(excinfo.value)
    assert "trains lm_head.weight, which the base model ties to model.embed_tokens.weight" in message
    assert "tie_word_embeddings=false" in message and "merge: false" in message and "\n" not in message
    assert not any((tmp_path / "head-out").glob("*.safetensors"))
    # peft itself would have shipped a model whose logits differ from the adapter model's:
    assert mm.peft_reference(base, head, tmp_path / "peft-head") is None


def test_moe_target_parameters_reach_the_peft_fallback(
    matrix_bases: dict[str, mm.BuiltBase], tmp_path: Path
) -> None:
    base = matrix_bases["mixtral-bf16"]
    adapter = mm.make_adapter(base, _case("all-linear"), tmp_path / "adapter")
    assert json.loads((adapter / "adapter_config.json").read_text())["target_parameters"]
    report = merge(base.path, adapter, tmp_path / "ours")
    assert report.method == "peft" and any("target_parameters" in w for w in report.warnings)
    assert mm.peft_reference(base, adapter, tmp_path / "peft") is None
    assert mm.differences(tmp_path / "ours", tmp_path / "peft") == []


def test_raw_fast_svd_pissa_is_refused_before_anything_is_written(
    models: dict[str, Path], tmp_path: Path
) -> None:
    base = models["llama-fp32"]
    adapter = make_lora_adapter(base, tmp_path / "adapter", target_modules=("q_proj",))
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "init_lora_weights": "pissa_niter_4"}))
    with pytest.raises(AdapterError, match=r"randomised SVD.*path_initial_model_for_weight_conversion"):
        merge(base, adapter, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- adapters and bases that contradict themselves -----------------------------------------------------------


def test_adapter_weights_the_config_does_not_target_are_refused(
    models: dict[str, Path], tmp_path: Path
) -> None:
    base = models["llama-bf16"]
    adapter = make_lora_adapter(base, tmp_path / "adapter", target_modules=("q_proj", "v_proj"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    (adapter / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["q_proj"]}))
    with pytest.raises(AdapterError, match=r"holds LoRA weights for .*v_proj.*does not target"):
        merge(base, adapter, tmp_path / "out")


def test_a_base_missing_a_tensor_its_class_needs_is_an_error(models: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from deploygate.core.errors import ModelSourceError

    base = tmp_path / "base"
    shutil.copytree(models["llama-tied"], base)
    tensors = load_file(base / "model.safetensors")
    del tensors["model.layers.1.post_attention_layernorm.weight"]
    save_file(tensors, base / "model.safetensors", metadata={"format": "pt"})
    adapter = make_lora_adapter(models["llama-tied"], tmp_path / "adapter", target_modules=("q_proj",))
    with pytest.raises(ModelSourceError, match=r"lacks tensors LlamaForCausalLM needs.*random weights"):
        merge(base, adapter, tmp_path / "out")


def test_a_base_of_an_architecture_transformers_lacks_is_refused(
    models: dict[str, Path], tmp_path: Path
) -> None:
    base = tmp_path / "base"
    shutil.copytree(models["llama-fp32"], base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "architectures": ["MyLlamaForCausalLM"]}))
    adapter = make_lora_adapter(models["llama-fp32"], tmp_path / "adapter", target_modules=("q_proj",))
    from deploygate.core.errors import ModelSourceError

    with pytest.raises(ModelSourceError, match="'MyLlamaForCausalLM', which transformers does not provide"):
        merge(base, adapter, tmp_path / "out")


# --- the checks every merge ends with ------------------------------------------------------------------------


def test_the_written_model_must_hold_the_base_models_tensors(models: dict[str, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from deploygate.adapters.lora_merge import _check_written, _written_index

    base = models["llama-fp32"]
    adapter = make_lora_adapter(base, tmp_path / "adapter", target_modules=("q_proj",))
    merge(base, adapter, tmp_path / "out")
    expected = _written_index(tmp_path / "out")
    _check_written(tmp_path / "out", expected, "the streaming merge")  # the real output passes
    tensors = load_file(tmp_path / "out" / "model.safetensors")
    del tensors["model.norm.weight"]
    tensors["model.layers.0.self_attn.q_proj.weight"] = tensors[
        "model.layers.0.self_attn.q_proj.weight"
    ].half()
    save_file(tensors, tmp_path / "out" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(
        MergeError, match=r"missing model\.norm\.weight.*q_proj\.weight is F16\[64, 64\], not F32"
    ):
        _check_written(tmp_path / "out", expected, "the streaming merge")


def test_logits_must_agree_within_the_dtypes_rounding() -> None:
    from deploygate.adapters.lora_merge import _compare_logits

    base = torch.zeros(1, 8, 16)
    adapter = base + torch.linspace(-1, 1, 16)  # the adapter moves logits by up to 1
    assert _compare_logits(adapter, adapter + 0.004, base, "bfloat16") is None  # one bf16 ulp near 1
    assert _compare_logits(adapter, adapter + 1e-6, base, "float32") is None
    differs = _compare_logits(adapter, base, base, "bfloat16")  # the adapter's effect lost in the merge
    assert differs is not None and "differ from the adapter model's by up to 1" in differs
    assert _compare_logits(adapter, adapter + 1e-3, base, "float32") is not None


def test_every_lora_config_field_is_judged() -> None:
    import dataclasses

    from peft import LoraConfig

    from deploygate.adapters.lora_merge import _FIELD_RULES

    fields = {f.name for f in dataclasses.fields(LoraConfig)}
    assert fields - _FIELD_RULES.keys() == set(), (
        "a peft field no rule covers: decide what it means for the merge"
    )
    doc = (Path(__file__).resolve().parents[2] / "docs" / "merge-support.md").read_text(encoding="utf-8")
    assert [f for f in sorted(_FIELD_RULES) if f"`{f}`" not in doc] == []
