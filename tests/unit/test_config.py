"""Settings: precedence flag > params.yaml > default, value parsing, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploygate.config import SETTINGS, build_config, parse_bool
from deploygate.errors import ConfigError

PARAMS = {
    "mlflow": {"experiment_name": "seed-exp", "tracking_uri": "http://params:5000"},
    "deployment": {
        "min_improvement_threshold": 0.005,
        "model_registry_name": "ecommerce-chatbot",
        "huggingface": {"model_id": "me/model", "push_to_hub": False, "create_model_card": True},
        "weighted_scoring": {"weights": {"bleu1": 0.1, "bleu2": 0.15, "bleu3": 0.25, "bleu4": 0.4, "rougeL_precision": 0.1}},
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
    cfg = build_config({"min-improvement-threshold": "0.01", "skip-hf-push": "false"}, PARAMS,
                       env_tracking_uri="http://env:5000")
    assert cfg.min_improvement_threshold == 0.01
    assert not cfg.skip_hf_push
    assert cfg.mlflow_tracking_uri == "http://env:5000"
    cfg = build_config({"mlflow-tracking-uri": "http://flag:1"}, PARAMS, env_tracking_uri="http://env:5000")
    assert cfg.mlflow_tracking_uri == "http://flag:1"


def test_weights_flag_text():
    cfg = build_config({"weights": "bleu4=3, rougeL_precision=1"})
    assert cfg.weights.values == pytest.approx({"bleu4": 0.75, "rougeL_precision": 0.25})
    assert cfg.warnings


@pytest.mark.parametrize("word,value", [("true", True), ("Yes", True), ("on", True), ("1", True),
                                        ("FALSE", False), ("no", False), ("off", False), ("0", False)])
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
    ({}, {"deployment": {"min_improvement_threshold": "lots"}}, "params.yaml deployment.min_improvement_threshold"),
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
