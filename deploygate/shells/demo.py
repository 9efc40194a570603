"""`deploygate demo`: the gate three times against a local MLflow store, no accounts, no servers.

A first model deploys, a worse one is rejected, a better one replaces it. Each candidate is a real
LoRA adapter over a tiny random Llama built on the spot; a deployed one is merged and its Hub
folder (weights, tokenizer, model card) exported instead of pushed. Everything lands in one folder
(the MLflow sqlite store, the result files, the Hub folders) and the command says where.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from deploygate.core.errors import EXIT_OK, ConfigError

DEMO_OUTPUTS = ("mlflow.db", "mlartifacts", "results", "hub-export", "candidates", "base-model")
CANDIDATES = (
    ("1-first", {"bleu1": 0.412, "bleu2": 0.281, "bleu3": 0.198, "bleu4": 0.141, "rougeL_precision": 0.452}),
    ("2-worse", {"bleu1": 0.405, "bleu2": 0.270, "bleu3": 0.190, "bleu4": 0.133, "rougeL_precision": 0.447}),
    ("3-better", {"bleu1": 0.431, "bleu2": 0.302, "bleu3": 0.219, "bleu4": 0.160, "rougeL_precision": 0.468}),
)


HIDDEN, INTERMEDIATE, LAYERS, HEADS, KV_HEADS = 64, 128, 2, 4, 2
WORDS = ("hello", "order", "refund", "shipping", "size", "colour", "price", "thanks", "help", "return")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def _write_tokenizer(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {
        t: i for i, t in enumerate(("<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", *WORDS))
    }
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder.mkdir(parents=True, exist_ok=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "chat_template": CHAT_TEMPLATE,
            },
            indent=2,
        )
    )


def write_base_model(folder: Path) -> Path:
    """A random-weight Llama small enough to merge in a blink (bf16 safetensors, a tokenizer)."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    vocab = 6 + len(WORDS)
    head_dim = HIDDEN // HEADS

    def rnd(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * 0.05).to(torch.bfloat16)

    tensors = {
        "model.embed_tokens.weight": rnd(vocab, HIDDEN),
        "model.norm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
        "lm_head.weight": rnd(vocab, HIDDEN),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        tensors |= {
            p + "self_attn.q_proj.weight": rnd(HIDDEN, HIDDEN),
            p + "self_attn.k_proj.weight": rnd(KV_HEADS * head_dim, HIDDEN),
            p + "self_attn.v_proj.weight": rnd(KV_HEADS * head_dim, HIDDEN),
            p + "self_attn.o_proj.weight": rnd(HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": rnd(INTERMEDIATE, HIDDEN),
            p + "mlp.up_proj.weight": rnd(INTERMEDIATE, HIDDEN),
            p + "mlp.down_proj.weight": rnd(HIDDEN, INTERMEDIATE),
            p + "input_layernorm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
            p + "post_attention_layernorm.weight": torch.ones(HIDDEN, dtype=torch.bfloat16),
        }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LlamaForCausalLM"],
                "model_type": "llama",
                "hidden_size": HIDDEN,
                "intermediate_size": INTERMEDIATE,
                "num_hidden_layers": LAYERS,
                "num_attention_heads": HEADS,
                "num_key_value_heads": KV_HEADS,
                "vocab_size": vocab,
                "max_position_embeddings": 128,
                "rms_norm_eps": 1e-6,
                "torch_dtype": "bfloat16",
                "tie_word_embeddings": False,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": 3,
                "_name_or_path": "deploygate-demo/tiny-llama",
            },
            indent=2,
        )
    )
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2}))
    _write_tokenizer(folder)
    return folder


def _write_model(folder: Path, name: str, base: Path, seed: int) -> None:
    """A LoRA adapter for `base`, laid out as the seed logs it (peft/ + tokenizer/)."""
    import torch
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    r = 4
    head_dim = HIDDEN // HEADS
    shapes = {"q_proj": (HIDDEN, HIDDEN), "v_proj": (KV_HEADS * head_dim, HIDDEN)}
    tensors = {}
    for i in range(LAYERS):
        for module, (out_f, in_f) in shapes.items():
            key = f"base_model.model.model.layers.{i}.self_attn.{module}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(r, in_f, generator=gen) * 0.1
            tensors[f"{key}.lora_B.weight"] = torch.randn(out_f, r, generator=gen) * 0.1
    peft_dir = folder / "peft"
    peft_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(peft_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    (peft_dir / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "base_model_name_or_path": str(base),
                "r": r,
                "lora_alpha": 8,
                "lora_dropout": 0.05,
                "target_modules": ["q_proj", "v_proj"],
                "bias": "none",
                "fan_in_fan_out": False,
                "use_rslora": False,
                "use_dora": False,
            },
            indent=2,
        )
    )
    _write_tokenizer(folder / "tokenizer")
    (folder / "MLmodel").write_text(f"artifact_path: model\nflavors: {{}}\nmodel_name: {name}\n")


def _write_candidate(
    root: Path, name: str, metrics: dict[str, float], base: Path, seed: int, store: str
) -> dict[str, str]:
    """One candidate's files (metrics, adapter, location record); the settings its gate run takes."""
    cdir = root / "candidates" / name
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    _write_model(cdir / "model", name, base, seed)
    (cdir / "fine_tuned_model_location.json").write_text(
        json.dumps({"local_path": "model", "model_name": f"demo-{name}", "fine_tuned": True}, indent=2)
    )
    given = {
        "evaluation-results": str(cdir / "metrics.json"),
        "model-artifact-path": str(cdir / "fine_tuned_model_location.json"),
        "output-dir": str(root / "results" / name),
        "mlflow-tracking-uri": store,
        "registry-name": "demo-chatbot",
        "experiment-name": "deploygate-demo",
        "skip-hf-push": "true",
        "hf-export-dir": str(root / "hub-export" / name),
    }
    return given


def run_demo(folder: Path | None) -> int:
    from deploygate.adapters.lora_merge import MERGE_MODULES, missing_modules
    from deploygate.bootstrap import context_from_env, execute, prepare
    from deploygate.core.model import RunContext
    from deploygate.service.ship import TORCH_CPU
    from deploygate.shells.cli import print_result

    # the demo builds models (the merge extra) and keeps a local sqlite store (the local extra)
    if missing := missing_modules((*MERGE_MODULES, "tokenizers", "sqlalchemy")):
        raise ConfigError(
            f"demo: needs {', '.join(missing)}, not installed here; install "
            f"'deploygate[merge,local]' (torch's CPU build first: {TORCH_CPU})"
        )
    root = (folder or Path(tempfile.mkdtemp(prefix="deploygate-demo-"))).resolve()
    root.mkdir(parents=True, exist_ok=True)
    # A second demo in the same folder starts over: only what a demo itself wrote is removed.
    for name in DEMO_OUTPUTS:
        target = root / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    store = f"sqlite:///{root / 'mlflow.db'}"
    print(f"deploygate demo in {root} (MLflow store {store})\n")
    rows = []
    base = write_base_model(root / "base-model")
    for seed, (name, metrics) in enumerate(CANDIDATES):
        given = _write_candidate(root, name, metrics, base, seed, store)
        cfg, cand = prepare(given, {})
        ctx = RunContext(event_name="demo", git_sha=f"demo{name[0]}" * 5, actor=context_from_env({}).actor)
        print(f"--- candidate {name}")
        result = execute(cfg, ctx, {}, cand)
        print_result(result)
        print()
        rows.append((name, result))
    print("summary:")
    for name, result in rows:
        version = f"v{result.registered_version}" if result.registered_version else "-"
        print(
            f"  {name:<9} score {result.candidate.score:.4f}  {result.decision.verdict:<6} {version:<4} {result.decision.reason}"
        )
    print(
        f"\nresult files: {root / 'results'}/*/deployment_info.json, model_comparison.json, deployment_logs.txt"
    )
    print(f"Hub folders (merged model, tokenizer, model card) of the deployed ones: {root / 'hub-export'}/")
    print(f"browse the runs: mlflow ui --backend-store-uri {store}")
    return EXIT_OK
