"""The model card pushed with each deployed model: values in, README.md text out.

Metadata is data: a `huggingface_hub.ModelCardData` (with `EvalResult`s -> `model-index`) serialised by
a YAML library, never by string templates. The body is a Jinja2 template rendered in jinja2's
sandbox (`templating.environment`: a user's template cannot reach the environment or run anything)
with `StrictUndefined`, so a missing value fails loudly. Every user-supplied string reaching the body is
escaped here (Markdown tables, HTML, newlines) before the template sees it. No network, no clock, no
environment: the caller passes everything, including `created_at`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from deploygate.core.errors import ConfigError
from deploygate.core.hub_names import hub_like
from deploygate.core.render.markdown import code_span as code
from deploygate.core.render.markdown import md, web_url

# How the seed's metric keys are shown and typed in `model-index`; other keys keep their own name.
METRIC_LABELS: Mapping[str, tuple[str, str, Mapping[str, Any] | None]] = {
    "bleu1": ("BLEU-1", "bleu", {"max_order": 1}),
    "bleu2": ("BLEU-2", "bleu", {"max_order": 2}),
    "bleu3": ("BLEU-3", "bleu", {"max_order": 3}),
    "bleu4": ("BLEU-4", "bleu", {"max_order": 4}),
    "rougeL_precision": ("ROUGE-L precision", "rouge", {"rouge_type": "rougeL", "statistic": "precision"}),
}
WEIGHTED_SCORE_TYPE = "deploygate_weighted_score"
SAFE_URL = re.compile(r"^https?://[^\s<>\"'`]+$")


@dataclass(frozen=True)
class AdapterFacts:
    """The LoRA adapter as configured in its adapter_config.json, and whether it was merged."""

    r: int
    lora_alpha: float
    target_modules: tuple[str, ...]
    use_rslora: bool = False
    merged: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        if self.r <= 0:
            raise ConfigError(f"LoRA rank r must be positive, got {self.r!r}.")

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)


@dataclass(frozen=True)
class CardBaseline:
    """The champion this model was compared with."""

    version: str | None
    weighted_score: float
    metrics: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class CardDecision:
    verdict: str
    reason: str
    forced: bool = False


@dataclass(frozen=True)
class CardInputs:
    """Everything the card says. `metrics` are the real metric values (0-1), not contributions."""

    repo_id: str
    base_model: str
    registry_name: str
    registry_version: str | None
    weighted_score: float
    metrics: Mapping[str, float]
    weights: Mapping[str, float]
    decision: CardDecision
    adapter: AdapterFacts
    created_at: str
    baseline: CardBaseline | None = None
    chat_template: str | None = None
    mlflow_run_url: str | None = None
    mlflow_model_url: str | None = None
    license: str | None = None
    language: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    git_sha: str | None = None
    dataset_name: str = "held-out evaluation split"
    dataset_type: str = "custom"
    # Not on the Hub: the folder the usage code loads from (an exported folder, when no repo id was given).
    model_path: str | None = None
    base_model_on_hub: bool = True  # False for a local base folder: named, not linked
    # A local MLflow store has no web page: the card names the run and the command that shows it.
    mlflow_run_id: str | None = None
    mlflow_ui_command: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "language", tuple(self.language))
        object.__setattr__(self, "tags", tuple(self.tags))
        for name in ("repo_id", "base_model"):
            value = getattr(self, name)
            if not isinstance(value, str) or not hub_like(value):
                raise ConfigError(f"Model card {name} {value!r} is not a Hub model id (owner/name).")
        for name, value in [("weighted_score", self.weighted_score), *self.metrics.items()]:
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ConfigError(f"Model card metric {name!r} is not a finite number: {value!r}.")


# --- body values: everything here is already escaped for Markdown -------------------------------------


def _num(value: float) -> str:
    return f"{value:.4f}"


def _delta(value: float) -> str:
    return f"{value:+.4f}"


def _link(label: str, url: str | None) -> str:
    if not url:
        return "not recorded"
    safe = web_url(url) if SAFE_URL.match(url) else None
    if safe is None:
        return f"{md(label)} (not a web link): {code(url)}"
    return f"[{md(label)}]({safe})"


def body_values(inputs: CardInputs) -> dict[str, Any]:
    """The values the body template may use (all strings pre-escaped)."""
    baseline = inputs.baseline
    rows = []
    for key, value in inputs.metrics.items():
        label = METRIC_LABELS.get(key, (key, key, None))[0]
        weight = inputs.weights.get(key)
        before = baseline.metrics.get(key) if baseline else None
        rows.append(
            {
                "name": md(label),
                "value": _num(value),
                "weight": _num(weight) if weight is not None else "–",
                "contribution": _num(weight * value) if weight is not None else "–",
                "baseline": _num(before) if before is not None else "–",
                "delta": _delta(value - before) if before is not None else "–",
            }
        )
    adapter = inputs.adapter
    comparison = None
    if baseline is not None:
        improvement = inputs.weighted_score - baseline.weighted_score
        comparison = {
            "version": md(baseline.version) if baseline.version else "unversioned",
            "weighted_score": _num(baseline.weighted_score),
            "delta": _delta(improvement),
            "delta_pct": f"{improvement / baseline.weighted_score * 100:+.2f}%"
            if baseline.weighted_score
            else "n/a",
        }
    base = inputs.base_model  # validated: safe inside code, text and links
    return {
        "model_name": md(inputs.repo_id.split("/")[-1]),
        "repo_id": inputs.repo_id,  # validated: safe inside code and text
        "base_model": base,
        "base_model_link": f"[`{base}`](https://huggingface.co/{base})"
        if inputs.base_model_on_hub
        else f"`{base}` (a local base model)",
        "registry_name": code(inputs.registry_name),
        "registry_version": md(inputs.registry_version) if inputs.registry_version else "not registered",
        "weighted_score": _num(inputs.weighted_score),
        "metric_rows": rows,
        "comparison": comparison,
        "verdict": md(inputs.decision.verdict),
        "reason": md(inputs.decision.reason),
        "forced": inputs.decision.forced,
        "adapter": {
            "r": adapter.r,
            "lora_alpha": f"{adapter.lora_alpha:g}",
            "scaling": f"{adapter.scaling:.4g}",
            "scaling_rule": "alpha / sqrt(r) (rsLoRA)" if adapter.use_rslora else "alpha / r",
            "target_modules": ", ".join(code(m) for m in adapter.target_modules) or "none recorded",
            "merged": adapter.merged,
        },
        "usage_code": usage_code(inputs),
        **_tracking_links(inputs),
        "license": f"the {md(inputs.license)} license" if inputs.license else "the base model's license",
        "created_at": md(inputs.created_at),
        "git_sha": code(inputs.git_sha) if inputs.git_sha else None,
    }


def _tracking_links(inputs: CardInputs) -> dict[str, str]:
    """The MLflow lines: links to a server's pages, or for a local store the run id and `mlflow ui`."""
    model = f"{inputs.registry_name} version {inputs.registry_version or ''}".strip()
    if inputs.mlflow_ui_command and not inputs.mlflow_run_url:
        run = (f"run {code(inputs.mlflow_run_id)}" if inputs.mlflow_run_id else "not recorded") + (
            f" in a local MLflow store (browse it with {code(inputs.mlflow_ui_command)})"
        )
        version = (
            f"{code(inputs.registry_name)} version {md(inputs.registry_version)} in the same store"
            if inputs.registry_version
            else "not registered"
        )
        return {"mlflow_run_link": run, "mlflow_model_link": version}
    return {
        "mlflow_run_link": _link("MLflow run", inputs.mlflow_run_url),
        "mlflow_model_link": _link(model, inputs.mlflow_model_url),
    }


LOCAL_PLACEHOLDER = "path/to/this/folder"


def usage_code(inputs: CardInputs) -> str:
    """Python that loads this repo (or the exported folder) and generates, matching how the tokenizer
    expects prompts. Written for the pinned transformers (5.x: `dtype`, `apply_chat_template` returns a
    BatchEncoding); tests/integration/test_card_code.py runs it against a merged tiny model."""
    path = inputs.model_path
    if path is not None and ("`" in path or not path.isprintable()):
        path = LOCAL_PLACEHOLDER  # would break the code block: the reader fills in the folder
    # a validated repo id, or a path as a JSON string: both are plain double-quoted Python strings
    model_id = json.dumps(path if path is not None else inputs.repo_id)
    where = (
        "# this folder was exported, not pushed: load it from here (or from the Hub repo you push it to)\n"
        if path is not None
        else ""
    )
    if inputs.adapter.merged:
        load = (
            "from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"{where}model_id = {model_id}\n"
            "tokenizer = AutoTokenizer.from_pretrained(model_id)\n"
            'model = AutoModelForCausalLM.from_pretrained(model_id, dtype="auto", device_map="auto")\n'
        )
    else:
        load = (
            "from peft import AutoPeftModelForCausalLM\n"
            "from transformers import AutoTokenizer\n\n"
            f"{where}model_id = {model_id}\n"
            "tokenizer = AutoTokenizer.from_pretrained(model_id)\n"
            'model = AutoPeftModelForCausalLM.from_pretrained(model_id, dtype="auto", device_map="auto")\n'
        )
    if inputs.chat_template:
        system = (
            '    {"role": "system", "content": "You are a helpful assistant."},\n'
            if "system" in inputs.chat_template
            else ""
        )
        prompt = (
            "\nmessages = [\n"
            f"{system}"
            '    {"role": "user", "content": "Your question here"},\n'
            "]\n"
            "inputs = tokenizer.apply_chat_template(\n"
            '    messages, add_generation_prompt=True, return_tensors="pt", return_dict=True\n'
            ").to(model.device)\n"
        )
    else:
        prompt = (
            '\nprompt = "Your prompt here"\n'
            'inputs = tokenizer(prompt, return_tensors="pt").to(model.device)\n'
        )
    generate = (
        "outputs = model.generate(**inputs, max_new_tokens=256)\n"
        'print(tokenizer.decode(outputs[0][inputs["input_ids"].shape[-1]:], skip_special_tokens=True))\n'
    )
    return load + prompt + generate
