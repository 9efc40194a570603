"""Bad input: one clear line naming the input, exit 2, and nothing written anywhere.

Each case runs the CLI against the real MLflow server and then checks that the experiment and
the registered model do not exist and that the output folder was not created.
"""

from __future__ import annotations

import math

import pytest
from mlflow import MlflowClient

from deploygate.shells.cli import main
from tests.gatekit import SEED_METRICS, local_model, write_json

pytestmark = pytest.mark.slow

GOOD_LOCATION = {"local_path": "model"}

# id, metrics file content (object or raw text or None = missing), location content, extra args, needle
CASES = [
    ("metrics file missing", None, GOOD_LOCATION, [], "does not exist"),
    ("metrics not JSON", "{bleu1: 0.1", GOOD_LOCATION, [], "not valid JSON"),
    ("metrics empty file", "", GOOD_LOCATION, [], "is empty"),
    ("metrics is a list", [0.1, 0.2], GOOD_LOCATION, [], "not an object"),
    ("metric missing", {k: v for k, v in SEED_METRICS.items() if k != "bleu3"}, GOOD_LOCATION, [], "'bleu3'"),
    ("metric is text", {**SEED_METRICS, "bleu2": "high"}, GOOD_LOCATION, [], "not a number"),
    (
        "metric NaN",
        '{"bleu1": NaN, "bleu2": 0.2, "bleu3": 0.1, "bleu4": 0.1, "rougeL_precision": 0.3}',
        GOOD_LOCATION,
        [],
        "no usable value",
    ),
    ("metric Infinity", {**SEED_METRICS, "bleu4": math.inf}, GOOD_LOCATION, [], "no usable value"),
    ("metric negative", {**SEED_METRICS, "bleu4": -0.2}, GOOD_LOCATION, [], "below 0"),
    ("metric on 0-100 scale", {**SEED_METRICS, "bleu1": 41.2}, GOOD_LOCATION, [], "--metrics-scale 100"),
    ("unknown weight name", SEED_METRICS, GOOD_LOCATION, ["--weights", "bleu1=0.5,blue4=0.5"], "'blue4'"),
    ("negative weight", SEED_METRICS, GOOD_LOCATION, ["--weights", "bleu1=-1,bleu4=2"], "negative"),
    ("zero-sum weights", SEED_METRICS, GOOD_LOCATION, ["--weights", "bleu1=0,bleu4=0"], "sum to 0"),
    ("negative threshold", SEED_METRICS, GOOD_LOCATION, ["--min-improvement-threshold", "-0.01"], "negative"),
    ("text threshold", SEED_METRICS, GOOD_LOCATION, ["--min-improvement-threshold", "small"], "not a number"),
    (
        "location without a source",
        SEED_METRICS,
        {"model_name": "x", "fine_tuned": True},
        [],
        "names no model source",
    ),
    ("location is a list", SEED_METRICS, ["runs:/x"], [], "not an object"),
    ("location local_path missing", SEED_METRICS, {"local_path": "nowhere"}, [], "not a directory"),
    ("location run id not a string", SEED_METRICS, {"mlflow_run_id": 42}, [], "non-empty string"),
    ("bad model uri", SEED_METRICS, GOOD_LOCATION, ["--model-uri", "just-a-name"], "not an MLflow model URI"),
    ("bad params.yaml", SEED_METRICS, GOOD_LOCATION, ["--config", "@bad-yaml"], "not valid YAML"),
    ("params.yaml missing", SEED_METRICS, GOOD_LOCATION, ["--config", "nope.yaml"], "does not exist"),
    (
        "params.yaml bad weights",
        SEED_METRICS,
        GOOD_LOCATION,
        ["--config", "@bad-weights"],
        "params.yaml deployment.weighted_scoring.weights",
    ),
]


@pytest.mark.parametrize(
    ("metrics", "location", "extra", "needle"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input(
    tmp_path, capsys, mlflow_server, registry_name, experiment_name, metrics, location, extra, needle
):
    local_model(tmp_path / "model")
    metrics_path = tmp_path / "metrics.json"
    if metrics is not None:
        write_json(metrics_path, metrics)
    loc_path = write_json(tmp_path / "location.json", location)
    if extra[:1] == ["--config"] and extra[1].startswith("@"):
        body = {
            "@bad-yaml": "deployment: [unclosed\n",
            "@bad-weights": "deployment:\n  weighted_scoring:\n    weights: {bleu1: -1}\n",
        }[extra[1]]
        extra = ["--config", str(write_json(tmp_path / "params.yaml", body))]
    out_dir = tmp_path / "out"
    capsys.readouterr()
    code = main(
        [
            "--evaluation-results",
            str(metrics_path),
            "--model-artifact-path",
            str(loc_path),
            "--output-dir",
            str(out_dir),
            "--mlflow-tracking-uri",
            mlflow_server.uri,
            "--registry-name",
            registry_name,
            "--experiment-name",
            experiment_name,
            "--skip-hf-push",
            *extra,
        ]
    )
    err = capsys.readouterr().err
    error_lines = [line for line in err.splitlines() if line.startswith("deploygate: error")]
    assert code == 2, err
    assert len(error_lines) == 1 and needle in error_lines[0], err
    assert "Traceback" not in err
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    assert client.get_experiment_by_name(experiment_name) is None
    assert client.search_registered_models(f"name = '{registry_name}'", max_results=1) == []
    assert not out_dir.exists()


def test_usage_errors_exit_2(capsys):
    assert main(["--force-deploy=yes"]) == 2
    assert main(["--no-such-flag"]) == 2
