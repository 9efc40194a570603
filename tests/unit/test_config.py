"""Settings: precedence flag > params.yaml > default, value parsing, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploygate.core.errors import ConfigError
from deploygate.core.settings import SETTINGS, build_config, parse_bool

PARAMS = {
    "mlflow": {"experiment_name": "seed-exp", "tracking_uri": "http://params:5000"},
    "deployment": {
        "min_improvement_threshold": 0.005,
        "model_registry_name": "ecommerce-chatbot",
        "huggingface": {"model_id": "me/model", "push_to_hub": False, "create_model_card": True},
        "weighted_scoring": {
            "weights": {"bleu1": 0.1, "bleu2": 0.15, "bleu3": 0.25, "bleu4": 0.4, "rougeL_precision": 0.1}
        },
    },
}


def test_defaults():
    cfg = build_config({})
    assert cfg.min_improvement_threshold == 0.001
    assert cfg.champion_alias == "champion" and cfg.baseline == "champion" and cfg.promotion == "alias"
    assert cfg.mlflow_tracking_uri == "sqlite:///mlflow.db"
    assert cfg.output_dir == Path("results/deployment")


def test_seed_params_are_read():
    cfg = build_config({}, PARAMS)
    assert cfg.min_improvement_threshold == 0.005
    assert cfg.registry_name == "ecommerce-chatbot"
    assert cfg.experiment_name == "seed-exp"
    assert cfg.hf_model_id == "me/model"
    assert cfg.skip_hf_push  # push_to_hub: false
    assert cfg.mlflow_tracking_uri == "http://params:5000"


def test_flags_beat_params_and_env_beats_params():
    cfg = build_config(
        {"min-improvement-threshold": "0.01", "skip-hf-push": "false"},
        PARAMS,
        env_tracking_uri="http://env:5000",
    )
    assert cfg.min_improvement_threshold == 0.01
    assert not cfg.skip_hf_push
    assert cfg.mlflow_tracking_uri == "http://env:5000"
    cfg = build_config({"mlflow-tracking-uri": "http://flag:1"}, PARAMS, env_tracking_uri="http://env:5000")
    assert cfg.mlflow_tracking_uri == "http://flag:1"


def test_weights_flag_text():
    cfg = build_config({"weights": "bleu4=3, rougeL_precision=1"})
    assert cfg.weights.values == pytest.approx({"bleu4": 0.75, "rougeL_precision": 0.25})
    assert cfg.warnings


@pytest.mark.parametrize(
    "word,value",
    [
        ("true", True),
        ("Yes", True),
        ("on", True),
        ("1", True),
        ("FALSE", False),
        ("no", False),
        ("off", False),
        ("0", False),
    ],
)
def test_bool_spellings(word, value):
    assert parse_bool(word, "x") is value


BAD = [
    ({"min-improvement-threshold": "-0.1"}, None, "negative"),
    ({"min-improvement-threshold": "abc"}, None, "not a number"),
    ({"min-improvement-threshold": "nan"}, None, "not finite"),
    ({"force-deploy": "maybe"}, None, "not a boolean"),
    ({"baseline": "worst"}, None, "not one of"),
    ({"promotion": "prod"}, None, "not one of"),
    ({"metrics-scale": "10"}, None, "not a metric scale"),
    ({"champion-alias": "latest"}, None, "not a valid MLflow alias"),
    ({"weights": "bleu4"}, None, "name=weight"),
    (
        {},
        {"deployment": {"min_improvement_threshold": "lots"}},
        "params.yaml deployment.min_improvement_threshold",
    ),
    ({}, {"deployment": {"weighted_scoring": {"weights": {"bleu1": -1}}}}, "negative"),
    ({}, {"deployment": {"huggingface": {"push_to_hub": "sometimes"}}}, "push_to_hub"),
]


@pytest.mark.parametrize(("given", "params", "needle"), BAD)
def test_bad_settings(given, params, needle):
    with pytest.raises(ConfigError, match=needle):
        build_config(given, params)


def test_every_setting_has_help_and_kebab_name():
    for s in SETTINGS:
        assert s.help and s.name == s.name.lower() and "_" not in s.name


# A params.yaml laid out like the E-commerce-Chatbot project's: the other stages' sections sit beside
# `deployment:` and `mlflow:` and are theirs to read.
PROJECT_PARAMS = {
    "sampling": {"sample_size": 10, "sample_description": "small"},
    "model": {
        "base_model": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "device": {"use_gpu": True, "device_map": "auto"},
    },
    "lora": {"r": 16, "alpha": 32, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]},
    "training": {"epochs": 2, "batch_size": 4, "learning_rate": 0.0002, "fp16": True},
    "data": {"dataset_path": "data/processed/x.jsonl", "test_size": 0.1, "seed": 42},
    "evaluation": {"use_dagshub": True, "num_beams": 4, "metrics": ["bleu", "rouge"]},
    "hpo": {"n_trials": 5},
    "deploy": {"note": "a section of the user's own, not a near-miss of deployment"},
    "mlflow": {
        "tracking_uri": "https://dagshub.com/u/r.mlflow",
        "experiment_name": "exp",
        "artifact_location": "s3://bucket/x",
    },  # another stage's key: left alone
    **PARAMS,
}


def test_the_other_stages_sections_and_keys_are_accepted():
    cfg = build_config({}, PROJECT_PARAMS)
    assert cfg.registry_name == "ecommerce-chatbot" and cfg.mlflow_tracking_uri == "http://params:5000"


TYPOS = [
    (
        {"deployment": {"min_improvment_threshold": 0.5}},
        "deployment.min_improvment_threshold: unknown key; did you mean 'min_improvement_threshold'?",
    ),
    (
        {"deploymnet": {"min_improvement_threshold": 0.5}},
        "section 'deploymnet' is not one deploygate reads; did you mean 'deployment'?",
    ),
    ({"Deployment": {}}, "did you mean 'deployment'?"),
    ({"mlfow": {"tracking_uri": "x"}}, "did you mean 'mlflow'?"),
    (
        {"deployment": {"weighted_scoring": {"weigths": {"bleu4": 1}}}},
        "weighted_scoring.weigths: unknown key; did you mean 'weights'?",
    ),
    (
        {"deployment": {"huggingface": {"modle_id": "a/b"}}},
        "huggingface.modle_id: unknown key; did you mean 'model_id'?",
    ),
    ({"deployment": {"huggingface": {"push_to_hubb": False}}}, "did you mean 'push_to_hub'?"),
    (
        {"deployment": {"significance": {"resample": 10}}},
        "significance.resample: unknown key; did you mean 'resamples'?",
    ),
    (
        {"mlflow": {"tracking_url": "http://x"}},
        "mlflow.tracking_url: unknown key; did you mean 'tracking_uri'?",
    ),
    ({"mlflow": {"experiment": "x"}}, "did you mean 'experiment_name'?"),
    (
        {"deployment": {"colour": "red"}},
        "deployment.colour: unknown key; deploygate reads only: min_improvement_threshold",
    ),
    (
        {"deployment": {"huggingface": ["a/b"]}},
        "deployment.huggingface: ['a/b'] is a list, not a mapping of model_id",
    ),
    ({"deployment": {1: 2}}, "deployment.1: unknown key"),
]


@pytest.mark.parametrize(("params", "needle"), TYPOS)
def test_misspelled_keys_are_refused_with_the_known_key(params, needle):
    with pytest.raises(ConfigError) as err:
        build_config({}, params)
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 2


def test_tracking_uri_source_is_named():
    assert build_config({}).tracking_uri_source.startswith("default")
    assert build_config({}, PARAMS).tracking_uri_source == "params.yaml mlflow.tracking_uri"
    assert (
        build_config({}, PARAMS, env_tracking_uri="http://env:1").tracking_uri_source == "MLFLOW_TRACKING_URI"
    )
    flag = build_config({"mlflow-tracking-uri": "http://f:1"}, PARAMS, env_tracking_uri="http://env:1")
    assert (flag.mlflow_tracking_uri, flag.tracking_uri_source) == ("http://f:1", "--mlflow-tracking-uri")
