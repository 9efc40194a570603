"""The model card: golden output, metadata read back by huggingface_hub, strictness, escaping.

Regenerate the golden file after an intended change with `UPDATE_GOLDEN=1 pytest tests/unit/test_card.py`
and review the diff.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from deploygate.adapters.hf_card import default_template_path, render_card
from deploygate.core.errors import ConfigError
from deploygate.core.render.card import (
    AdapterFacts,
    CardBaseline,
    CardDecision,
    CardInputs,
)

GOLDEN = Path(__file__).parent / "golden" / "model_card.md"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}{% if system %}{% endif %}"
)

INPUTS = CardInputs(
    repo_id="acme/qa-model",
    base_model="Qwen/Qwen2.5-0.5B-Instruct",
    registry_name="qa-model",
    registry_version="4",
    weighted_score=0.4123,
    metrics={"bleu1": 0.5, "bleu2": 0.4, "bleu3": 0.3, "bleu4": 0.2, "rougeL_precision": 0.6},
    weights={"bleu1": 0.1, "bleu2": 0.1, "bleu3": 0.1, "bleu4": 0.2, "rougeL_precision": 0.5},
    decision=CardDecision("deploy", "beats the champion (version 3) by 0.0123, threshold 0.01"),
    adapter=AdapterFacts(r=16, lora_alpha=32, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")),
    created_at="2026-01-02T03:04:05Z",
    baseline=CardBaseline(
        "3", 0.4, {"bleu1": 0.49, "bleu2": 0.41, "bleu3": 0.3, "bleu4": 0.2, "rougeL_precision": 0.58}
    ),
    chat_template=CHAT_TEMPLATE,
    mlflow_run_url="https://dagshub.com/acme/qa.mlflow/#/experiments/1/runs/abc123",
    mlflow_model_url="https://dagshub.com/acme/qa.mlflow/#/models/qa-model/versions/4",
    license="apache-2.0",
    language=("en",),
    tags=("question-answering",),
    git_sha="0123456789abcdef0123456789abcdef01234567",
)


def metadata(text: str) -> ModelCardData:
    """The card's metadata as huggingface_hub parses it (what the Hub shows)."""
    data = ModelCard(text).data
    assert isinstance(data, ModelCardData) and data.eval_results is not None and data.tags is not None
    return data


def body(text: str) -> str:
    return text.split("\n---\n", 1)[1]


def test_card_matches_golden_file() -> None:
    text = render_card(INPUTS)
    if os.environ.get("UPDATE_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert text == GOLDEN.read_text(encoding="utf-8")
    assert render_card(INPUTS) == text  # no clock, no randomness


def test_metadata_reads_back_through_huggingface_hub() -> None:
    data = metadata(render_card(INPUTS))
    assert data.base_model == "Qwen/Qwen2.5-0.5B-Instruct"
    assert (data.library_name, data.pipeline_tag, data.license) == (
        "transformers",
        "text-generation",
        "apache-2.0",
    )
    assert data.language == ["en"]
    assert data.tags == ["question-answering", "deploygate", "lora"]
    assert data.model_name == "qa-model"
    results = {r.metric_name: (r.metric_type, r.metric_value) for r in data.eval_results or []}
    assert results == {
        "BLEU-1": ("bleu", 0.5),
        "BLEU-2": ("bleu", 0.4),
        "BLEU-3": ("bleu", 0.3),
        "BLEU-4": ("bleu", 0.2),
        "ROUGE-L precision": ("rouge", 0.6),
        "Weighted score": ("deploygate_weighted_score", 0.4123),
    }
    assert {r.task_type for r in data.eval_results or []} == {"text-generation"}
    assert {r.source_url for r in data.eval_results or []} == {INPUTS.mlflow_run_url}


def test_body_states_real_values_comparison_decision_and_training() -> None:
    text = body(render_card(INPUTS))
    assert "| ROUGE-L precision | 0.6000 | 0.5000 | 0.3000 |" in text  # value, weight, contribution
    assert "| ROUGE-L precision | 0.6000 | 0.5800 | +0.0200 |" in text  # vs the champion
    assert "| **Weighted score** | **0.4123** | 0.4000 | +0.0123 (+3.07%) |" in text
    assert "Verdict: **deploy**" in text
    assert "rank r = 16, alpha = 32, scaling = alpha / r = 2" in text
    assert "`q_proj`, `k_proj`, `v_proj`, `o_proj`" in text
    assert "[MLflow run](https://dagshub.com/acme/qa.mlflow/#/experiments/1/runs/abc123)" in text


@pytest.mark.parametrize(
    ("adapter", "expected"),
    [
        (
            AdapterFacts(r=64, lora_alpha=16, target_modules=("q_proj",), use_rslora=True),
            "alpha = 16, scaling = alpha / sqrt(r) (rsLoRA) = 2",
        ),
        (AdapterFacts(r=8, lora_alpha=8, target_modules=()), "alpha = 8, scaling = alpha / r = 1"),
    ],
)
def test_training_details_come_from_the_adapter(adapter: AdapterFacts, expected: str) -> None:
    assert expected in render_card(replace(INPUTS, adapter=adapter))


def test_first_model_and_forced_deploy() -> None:
    text = body(
        render_card(replace(INPUTS, baseline=None, decision=CardDecision("forced", "forced by input", True)))
    )
    assert "first model deployed for `qa-model`" in text
    assert "Champion" not in text
    assert "This deployment was forced" in text


@pytest.mark.parametrize(
    ("chat_template", "merged", "present", "absent"),
    [
        (
            None,
            True,
            ['tokenizer(prompt, return_tensors="pt")', "AutoModelForCausalLM"],
            ["apply_chat_template", "Peft"],
        ),
        (
            "{{ messages }}",
            True,
            ["tokenizer.apply_chat_template(", '"role": "user"'],
            ['"role": "system"', "tokenizer(prompt"],
        ),
        ("{% if m['role'] == 'system' %}{% endif %}", True, ['"role": "system"', "apply_chat_template"], []),
        (None, False, ["AutoPeftModelForCausalLM"], ["AutoModelForCausalLM.from_pretrained"]),
    ],
)
def test_usage_code_matches_the_tokenizer(
    chat_template: str | None, merged: bool, present: list[str], absent: list[str]
) -> None:
    adapter = replace(INPUTS.adapter, merged=merged)
    text = render_card(replace(INPUTS, chat_template=chat_template, adapter=adapter))
    usage = text.split("```python\n", 1)[1].split("```", 1)[0]
    compile(usage, "usage", "exec")  # the snippet is valid Python
    for needle in present:
        assert needle in usage
    for needle in absent:
        assert needle not in usage
    assert metadata(text).library_name == ("transformers" if merged else "peft")


def test_missing_template_value_fails_loudly(tmp_path: Path) -> None:
    template = tmp_path / "card.md.j2"
    template.write_text("---\n{{ card_data }}\n---\n# {{ model_name }}\n{{ no_such_value }}\n")
    with pytest.raises(ConfigError, match="no_such_value"):
        render_card(INPUTS, template)
    template.write_text("---\n{{ card_data }}\n---\n{{ adapter.no_such_field }}\n")
    with pytest.raises(ConfigError, match="no_such_field"):
        render_card(INPUTS, template)


def test_user_template_overrides_but_must_keep_the_metadata(tmp_path: Path) -> None:
    template = tmp_path / "card.md.j2"
    template.write_text("---\n{{ card_data }}\n---\n# {{ model_name }}: {{ weighted_score }}\n")
    assert render_card(INPUTS, template).endswith("---\n# qa-model: 0.4123\n")
    template.write_text("# no metadata block\n")
    with pytest.raises(ConfigError, match="metadata"):
        render_card(INPUTS, template)
    with pytest.raises(ConfigError, match="Cannot read the model card template"):
        render_card(INPUTS, tmp_path / "missing.j2")


EVIL = "evil: |\n---\nkey: [x\n<script>alert(1)</script> | col `tick` [link](javascript:x) # head"


def test_user_strings_cannot_break_yaml_or_markdown() -> None:
    inputs = replace(
        INPUTS,
        metrics={**INPUTS.metrics, EVIL: 0.25},
        weights={**INPUTS.weights, EVIL: 0.0},
        decision=CardDecision("deploy", EVIL),
        registry_name="name`with`ticks\n---",
        registry_version="4 | 5",
        mlflow_run_url="javascript:alert(1)",
        tags=("ok", EVIL),
    )
    text = render_card(inputs)
    data = metadata(text)  # the YAML header still parses, with the evil strings as plain data
    assert EVIL in (data.tags or [])
    assert {r.metric_name for r in data.eval_results or []} >= {EVIL}
    block = REGEX_YAML_BLOCK.search(text)  # the same regex the Hub uses to find the header
    assert block is not None and yaml.safe_load(block.group(2))["tags"][1] == EVIL
    assert block.end() == text.index("\n# qa-model\n")  # the header ends where we put it

    text_body = body(text)
    assert "<script>" not in text_body and "&lt;script&gt;" in text_body
    assert not re.search(r"(?<!\\)\]\(javascript:", text_body)  # never a link target: escaped or code
    assert "`javascript:alert(1)`" in text_body
    assert [line for line in text_body.splitlines() if line.strip() == "---"] == []
    # every table row keeps its column count: user pipes are escaped
    for line in text_body.splitlines():
        if line.startswith("| ") and "Metric" not in line:
            cells = re.split(r"(?<!\\)\|", line)
            assert len(cells) in (6, 7), line
    assert "- Reason: evil: \\|" in text_body  # one line, pipes escaped


@pytest.mark.parametrize(
    "change",
    [
        {"repo_id": "not a repo"},
        {"repo_id": "acme/../x"},
        {"base_model": "bad model`"},
        {"weighted_score": float("nan")},
        {"metrics": {"bleu1": "0.5"}},
    ],
)
def test_bad_inputs_are_config_errors(change: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        replace(INPUTS, **change)  # type: ignore[arg-type]


def test_packaged_template_is_shipped() -> None:
    assert default_template_path().is_file()


def test_base_model_is_linked_only_when_it_is_a_hub_id() -> None:
    on_hub = body(render_card(INPUTS))
    assert "[`Qwen/Qwen2.5-0.5B-Instruct`](https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct)" in on_hub
    local = body(render_card(replace(INPUTS, base_model="demo/tiny-llama", base_model_on_hub=False)))
    assert "huggingface.co/demo/tiny-llama" not in local
    assert "fine-tune of `demo/tiny-llama` (a local base model)" in local


def test_a_local_store_names_the_run_and_the_mlflow_ui_command() -> None:
    command = "mlflow ui --backend-store-uri sqlite:////tmp/demo/mlflow.db"
    text = render_card(
        replace(
            INPUTS,
            mlflow_run_url=None,
            mlflow_model_url=None,
            mlflow_run_id="0123abcd",
            mlflow_ui_command=command,
        )
    )
    tracking = body(text).split("## Tracking", 1)[1].split("##", 1)[0]
    assert f"- MLflow run: run `0123abcd` in a local MLflow store (browse it with `{command}`)" in tracking
    assert "- Registered model: `qa-model` version 4 in the same store" in tracking
    assert "not recorded" not in tracking
    assert {r.source_url for r in metadata(text).eval_results or []} == {None}


def test_an_exported_folder_is_loaded_from_its_path() -> None:
    usage = render_card(replace(INPUTS, model_path="/tmp/export/3-better")).split("```python\n", 1)[1]
    assert 'model_id = "/tmp/export/3-better"' in usage and "acme/qa-model" not in usage.split("```")[0]
    odd = (
        render_card(replace(INPUTS, model_path="/tmp/```evil")).split("```python\n", 1)[1].split("```", 1)[0]
    )
    assert 'model_id = "path/to/this/folder"' in odd


# --- the sandbox: a card template comes from the repository (a pull request can change it) --------

ESCAPES = [
    "lipsum.__globals__['os'].environ['HF_TOKEN']",
    "cycler.__init__.__globals__.os.environ['HF_TOKEN']",
    "joiner.__init__.__globals__['os'].popen('echo $HF_TOKEN').read()",
    "namespace.__init__.__globals__",
    "''.__class__.__mro__[1].__subclasses__()",
    "card_data.__class__.__init__.__globals__",
    "'{0.__class__}'.format(card_data)",
]


@pytest.mark.parametrize("expression", ESCAPES)
def test_a_card_template_cannot_reach_the_environment_or_run_commands(
    expression: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """{{ lipsum.__globals__['os'].environ['HF_TOKEN'] }} read the token into the card: every template
    now renders in jinja2's sandbox, and check_template refuses it before anything is written."""
    from deploygate.adapters.hf_card import check_template

    token = "hf_sandbox_sentinel_" + os.urandom(8).hex()
    monkeypatch.setenv("HF_TOKEN", token)
    template = tmp_path / "card.j2"
    template.write_text("---\n{{ card_data }}\n---\n\n{{ " + expression + " }}\n")
    with pytest.raises(ConfigError, match="card-template") as caught:
        check_template(template)
    assert "unsafe" in str(caught.value) or "not safely callable" in str(caught.value), caught.value
    assert token not in str(caught.value)


@pytest.mark.parametrize("expression", ["'x' * 5000000", "[1] * 5000000", "9 ** 99999"])
def test_a_card_template_cannot_build_huge_values(expression: str, tmp_path: Path) -> None:
    template = tmp_path / "card.j2"
    template.write_text(
        "---\n{{ card_data }}\n---\n\n{{ (" + expression + ") | length if false else 1 }}\n"
        "{% set big = " + expression + " %}\n"
    )
    with pytest.raises(ConfigError, match="not allowed in a template"):
        render_card(INPUTS, template)


def test_packaged_templates_render_in_the_same_sandbox() -> None:
    """One environment builder: the card and the step summary both come from it."""
    from jinja2.sandbox import SandboxedEnvironment

    from deploygate.core.render import report
    from deploygate.core.render.templating import environment

    assert isinstance(environment(), SandboxedEnvironment)
    assert isinstance(report._ENV, SandboxedEnvironment)
    assert render_card(INPUTS).startswith("---\n")
