"""Tiny random-weight models and real peft LoRA adapters for tests, built locally in a second or two.

Nothing here downloads anything: configs, weights and tokenizers are made from scratch. The adapters are
real (`get_peft_model` + `save_pretrained`) with non-zero `lora_B`, so merging them changes the weights.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

# A small closed vocabulary: enough to tokenize and chat-template a sentence, nothing to download.
_TEXT = (
    "the a an is are was be to of and in on for with it this that you i we they what how why "
    "model deploy gate score merge adapter base hello world good bad yes no please thanks "
    "user assistant system question answer : , . ? !"
)
WORDS = tuple(_TEXT.split(" "))
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }} : {{ message['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}assistant : {% endif %}"
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)

_LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def save_tiny_tokenizer(out_dir: str | Path) -> Path:
    """Write a WordLevel tokenizer over WORDS (ids 0..3 are <unk> <s> </s> <pad>) with a chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *WORDS))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    out = Path(out_dir)
    tokenizer.save_pretrained(out)
    return out


def tokenizer_vocab_size() -> int:
    return len(SPECIAL_TOKENS) + len(WORDS)


def _save_model(model: torch.nn.Module, out: Path, shards: int) -> None:
    """save_pretrained with a max_shard_size that yields exactly `shards` files (tensor sizes are uneven)."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if shards <= 1:
        model.save_pretrained(out, max_shard_size=total * 2)
        return
    for step in range(shards * 4):
        limit = total * (step + 4) // (shards * 4) + 1
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            model.save_pretrained(tmp, max_shard_size=limit)
            if len(list(Path(tmp).glob("*.safetensors"))) <= shards:
                for produced in Path(tmp).iterdir():
                    produced.replace(out / produced.name)
                return
    raise AssertionError(f"could not save {out} in {shards} shards")


def make_tiny_llama(
    out_dir: str | Path,
    *,
    dtype: torch.dtype = torch.bfloat16,
    shards: int = 2,
    seed: int = 0,
    tie_word_embeddings: bool = False,
) -> Path:
    """A random LlamaForCausalLM (~0.3 MB) saved as sharded safetensors, with configs and a tokenizer."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = LlamaConfig(
        vocab_size=tokenizer_vocab_size(),
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(dtype).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=3, max_new_tokens=8
    )
    _save_model(model, out, shards)
    save_tiny_tokenizer(out)
    return out


def make_tiny_gpt2(
    out_dir: str | Path, *, dtype: torch.dtype = torch.float32, shards: int = 1, seed: int = 0
) -> Path:
    """A random GPT2LMHeadModel: its attention and MLP are Conv1D (weights stored as (in, out))."""
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = GPT2Config(
        vocab_size=tokenizer_vocab_size(),
        n_embd=48,
        n_layer=2,
        n_head=4,
        n_positions=128,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).to(dtype).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=1, eos_token_id=2, pad_token_id=3, max_new_tokens=8
    )
    _save_model(model, out, shards)
    save_tiny_tokenizer(out)
    return out


def make_lora_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    r: int = 8,
    alpha: int = 16,
    target_modules: Iterable[str] = _LLAMA_TARGETS,
    use_rslora: bool = False,
    rank_pattern: Mapping[str, int] | None = None,
    alpha_pattern: Mapping[str, float] | None = None,
    fan_in_fan_out: bool = False,
    use_dora: bool = False,
    modules_to_save: Iterable[str] | None = None,
    seed: int = 0,
    adapter_dtype: torch.dtype | None = None,
    with_tokenizer: bool = False,
    **extra_config: Any,
) -> Path:
    """A real peft LoRA adapter for the model in `base_dir`, with random non-zero A and B.

    `adapter_dtype` casts the saved adapter weights (peft keeps them in float32 by default);
    `with_tokenizer` also saves a tokenizer beside the adapter, as trainers usually do.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = Path(base_dir)
    out = Path(out_dir)
    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        target_modules=list(target_modules),
        use_rslora=use_rslora,
        rank_pattern=dict(rank_pattern or {}),
        alpha_pattern=dict(alpha_pattern or {}),
        fan_in_fan_out=fan_in_fan_out,
        use_dora=use_dora,
        modules_to_save=list(modules_to_save) if modules_to_save is not None else None,
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
        **extra_config,
    )
    peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            # lora_B starts at zero (a no-op adapter); make every adapter weight random so the merge shows.
            if "lora_" in name or "modules_to_save" in name:
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32) * 0.05
                if "modules_to_save" in name:
                    noise = param.float() + noise
                param.copy_(noise.to(param.dtype))
            if adapter_dtype is not None and ("lora_" in name):
                param.data = param.data.to(adapter_dtype)
    peft_model.save_pretrained(str(out))
    # peft records the base by the name it was loaded from; make it the exact directory string.
    config_path = out / "adapter_config.json"
    saved = json.loads(config_path.read_text())
    saved["base_model_name_or_path"] = str(base)
    config_path.write_text(json.dumps(saved, indent=2, sort_keys=True))
    if with_tokenizer:
        save_tiny_tokenizer(out)
    return out
