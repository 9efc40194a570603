"""The model card as the Hub reads it: the metadata serialised and checked by huggingface_hub's own
ModelCardData / ModelCard, the body rendered from the (packaged or the user's) Jinja2 template file.

An adapter of huggingface_hub's card library (imported inside functions, so a run that decides
"skip" never pays for it); the card's values and escaping are core/render/card.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from deploygate.core.errors import ConfigError
from deploygate.core.render.card import (
    METRIC_LABELS,
    SAFE_URL,
    WEIGHTED_SCORE_TYPE,
    AdapterFacts,
    CardBaseline,
    CardDecision,
    CardInputs,
    body_values,
)


def default_template_path() -> Path:
    return Path(str(resources.files("deploygate") / "templates" / "model_card.md.j2"))


def card_data(inputs: CardInputs) -> Any:
    """The YAML metadata, as `huggingface_hub.ModelCardData` (model-index from `EvalResult`s)."""
    from huggingface_hub import EvalResult, ModelCardData

    run_url = inputs.mlflow_run_url
    source_url = run_url if run_url and SAFE_URL.match(run_url) else None

    def result(metric_type: str, name: str, value: float, args: Mapping[str, Any] | None) -> EvalResult:
        return EvalResult(
            task_type="text-generation",
            task_name="Text Generation",
            dataset_type=inputs.dataset_type,
            dataset_name=inputs.dataset_name,
            metric_type=metric_type,
            metric_name=name,
            metric_value=round(float(value), 6),
            metric_args=dict(args) if args else None,
            source_name="MLflow run" if source_url else None,
            source_url=source_url,
        )

    results = []
    for key, value in inputs.metrics.items():
        label, metric_type, args = METRIC_LABELS.get(key, (key, key, None))
        results.append(result(metric_type, label, value, args))
    results.append(result(WEIGHTED_SCORE_TYPE, "Weighted score", inputs.weighted_score, None))
    tags = [*inputs.tags, "deploygate", "lora" if inputs.adapter.merged else "peft"]
    return ModelCardData(
        base_model=inputs.base_model,
        library_name="transformers" if inputs.adapter.merged else "peft",
        pipeline_tag="text-generation",
        license=inputs.license,
        language=list(inputs.language) or None,
        tags=tags,
        model_name=inputs.repo_id.split("/")[-1],
        eval_results=results,
        base_model_relation="finetune" if inputs.adapter.merged else "adapter",
    )


def render_card(inputs: CardInputs, template_path: Path | None = None) -> str:
    """README.md text: YAML metadata block + body from the template (the user's, else the packaged one)."""
    import jinja2
    from huggingface_hub import ModelCard

    from deploygate.core.render.templating import environment

    path = template_path or default_template_path()
    try:
        source = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the model card template {str(path)!r}: {exc.strerror or exc}."
        ) from exc
    except UnicodeDecodeError:
        raise ConfigError(f"The model card template {str(path)!r} is not UTF-8 text.") from None
    env = environment()  # sandboxed: the template may come from a pull request
    data = card_data(inputs)
    try:
        text = env.from_string(source).render(card_data=data.to_yaml(), **body_values(inputs))
    except jinja2.UndefinedError as exc:
        raise ConfigError(
            f"Model card template {str(path)!r} uses an undefined value: {exc.message}.",
            hint="Use only the documented card values (see deploygate/core/render/card.py body_values).",
        ) from exc
    except jinja2.TemplateError as exc:
        raise ConfigError(
            f"Model card template {str(path)!r} is invalid: {' '.join(str(exc).split())}."
        ) from exc
    except Exception as exc:  # e.g. {{ 1 / 0 }}: the user's template, not deploygate, failed
        raise ConfigError(
            f"Model card template {str(path)!r} failed to render: {type(exc).__name__}: "
            f"{' '.join(str(exc).split())}."
        ) from exc
    # the metadata must survive the template intact: parse it back and compare (without a block,
    # huggingface_hub would only log a warning and read empty metadata)
    same = text.startswith("---") and ModelCard(text).data.to_dict() == data.to_dict()  # type: ignore[no-untyped-call]
    if not same:
        raise ConfigError(
            f"Model card template {str(path)!r} must start with '---', "
            "'{{ card_data }}', '---' and leave the metadata unchanged."
        )
    return text


def check_template(template_path: Path) -> None:
    """Fail now, not after the merge, if a user's card template cannot be read or rendered: render it
    with sample values, with and without a champion to compare against. Raises ConfigError naming
    `card-template`."""
    sample = CardInputs(
        repo_id="owner/model",
        base_model="owner/base",
        registry_name="model",
        registry_version="1",
        weighted_score=0.5,
        metrics={"bleu4": 0.5},
        weights={"bleu4": 1.0},
        decision=CardDecision("deploy", "check"),
        adapter=AdapterFacts(r=8, lora_alpha=16, target_modules=("q_proj",)),
        created_at="2000-01-01T00:00:00+00:00",
        chat_template="{{ messages }}",
        mlflow_run_url="https://mlflow.example/run",
        mlflow_model_url="https://mlflow.example/model",
        license="apache-2.0",
        language=("en",),
        git_sha="0" * 40,
    )
    with_baseline = dataclasses.replace(sample, baseline=CardBaseline("1", 0.4, {"bleu4": 0.4}))
    try:
        for inputs in (sample, with_baseline):
            render_card(inputs, template_path)
    except ConfigError as exc:
        raise ConfigError(f"card-template: {exc.message}", hint=exc.hint) from None


class HfCards:
    """The CardRenderer port, on huggingface_hub's card classes."""

    def render(self, inputs: CardInputs, template_path: Path | None) -> str:
        return render_card(inputs, template_path)

    def check(self, template_path: Path) -> None:
        check_template(template_path)
