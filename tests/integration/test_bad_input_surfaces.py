"""Bad input on every surface: one clear line naming the input, exit 2, and nothing written anywhere.

A table of malformed inputs beyond tests/integration/test_bad_input.py: metrics files, model location
files, params.yaml, weights, thresholds, action inputs and event payloads (through `entrypoint.py`, as
the runner runs it), adapter configs, Hub repo ids, card template paths, output paths and predictions
files. Adapter configs, repo ids and templates only matter when the gate deploys, so those cases are a
first model (no champion yet: the gate decides to deploy) pushed to the local Hub server.

After each case: no MLflow experiment and no registered model, no Hub repo and no Hub write request,
no output folder. `SURFACE_COUNTS` is what the README "Guarantees" section quotes.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from deploygate.shells.cli import main
from tests.action.harness import ActionHarness
from tests.gatekit import SEED_METRICS

pytestmark = pytest.mark.slow

ADAPTER = {
    "peft_type": "LORA",
    "r": 4,
    "lora_alpha": 8,
    "target_modules": ["q_proj", "v_proj"],
    "base_model_name_or_path": "base",
    "task_type": "CAUSAL_LM",
}
GOOD_TEMPLATE = "---\n{{ card_data }}\n---\n\n# {{ model_name }}\n"
# The "billion laughs": nine aliases per level, seven levels, about 420 bytes -> 4.8 million strings.
ALIAS_BOMB = (
    "".join(
        f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n" for i in range(7)
    )
    + "deployment:\n  champion_alias: *l6\n"
)
HUGE = "1" + "0" * 400  # OverflowError when made a float
LONGER = "1" + "0" * 5000  # ValueError from Python's int-string limit (4,300 digits)
METRICS_TEXT = '{"bleu1": 0.41, "bleu2": 0.28, "bleu3": 0.2, "bleu4": 0.14, "rougeL_precision": 0.45'


@dataclass(frozen=True)
class Case:
    id: str
    surface: str
    needle: str  # must appear in the one error line
    shell: str = "cli"  # "cli" (deploygate.shells.cli.main in-process) or "action" (entrypoint.py subprocess)
    metrics: Any = field(default_factory=lambda: SEED_METRICS)  # object, text, bytes, or None (missing)
    location: Any = field(default_factory=lambda: {"local_path": "model"})
    files: dict[str, Any] = field(
        default_factory=dict
    )  # extra files (relative path -> text / bytes / object)
    args: tuple[str, ...] = ()  # CLI flags; "{repo}" is a fresh Hub repo id
    hub: bool = False  # push to the local Hub server (the first model deploys, so shipping is reached)
    adapter: Any = None  # adapter_config.json content in the model folder (None: a valid one)
    inputs: dict[str, str] = field(default_factory=dict)  # action inputs
    underscore_inputs: dict[str, str] = field(default_factory=dict)
    event_name: str = "push"
    payload: dict[str, Any] | None = None


def _dispatch(force: object) -> dict[str, Any]:
    return {"inputs": {"force": force}, "ref": "refs/heads/main", "repository": {"full_name": "octo/gate"}}


HUB = ("--hf-model-id", "{repo}")

CASES: list[Case] = [
    # --- metrics files -------------------------------------------------------------------------
    Case("metrics is a directory", "metrics", "is a directory", files={"metrics.json/x": "1"}, metrics=None),
    Case("metrics not UTF-8", "metrics", "not UTF-8", metrics=b'\xff\xfe{"bleu1": 0.1}'),
    Case("metrics JSON null", "metrics", "JSON null", metrics="null"),
    Case("metrics nested too deeply", "metrics", "nested too deeply", metrics="[" * 200_000),
    Case("metrics two spellings of bleu1", "metrics", "both spell", metrics={**SEED_METRICS, "BLEU-1": 0.3}),
    Case("metric is a boolean", "metrics", "not a number", metrics={**SEED_METRICS, "bleu3": True}),
    Case(
        "metric above 100 on the 0-100 scale",
        "metrics",
        "above 100",
        metrics={**{k: v * 100 for k, v in SEED_METRICS.items()}, "bleu4": 150},
        args=("--metrics-scale", "100"),
    ),
    Case(
        "metrics file over 16 MiB",
        "metrics",
        "over 16 MiB",
        metrics='{"bleu1": 0.1, "pad": "' + "x" * (17 << 20) + '"}',
    ),
    Case("metrics scale 10", "metrics", "not a metric scale", args=("--metrics-scale", "10")),
    Case("metric of 400 digits", "metrics", "too large", metrics=METRICS_TEXT.replace("0.41", HUGE) + "}"),
    Case(
        "metrics integer of 5000 digits under another key",
        "metrics",
        "5001 digits",
        metrics=METRICS_TEXT + f', "n_examples": {LONGER}}}',
    ),
    Case(
        "metrics key given twice",
        "metrics",
        "'bleu4' appears twice",
        metrics=METRICS_TEXT + ', "bleu4": 0.9}',
    ),
    # --- model location files ------------------------------------------------------------------
    Case("location not JSON", "location", "model-artifact-path", location="{'local_path': 'model'}"),
    Case("location local_path empty", "location", "non-empty string", location={"local_path": ""}),
    Case(
        "location run id with a path",
        "location",
        "not an MLflow run id",
        location={"mlflow_run_id": "../../etc"},
    ),
    Case(
        "location run id unknown to the server",
        "location",
        "is not a run on",
        location={"mlflow_run_id": "0123456789abcdef0123456789abcdef"},
    ),
    Case(
        "location is a directory", "location", "is a directory", location=None, files={"location.json/x": "1"}
    ),
    Case("location JSON null", "location", "not an object", location="null"),
    Case(
        "location key given twice",
        "location",
        "'local_path' appears twice",
        location='{"local_path": "model", "local_path": "elsewhere"}',
    ),
    # --- params.yaml ---------------------------------------------------------------------------
    Case("params top level is a list", "params.yaml", "not a mapping", files={"params.yaml": "- a\n- b\n"}),
    Case(
        "params deployment is text",
        "params.yaml",
        "section 'deployment'",
        files={"params.yaml": "deployment: yes please\n"},
    ),
    Case(
        "params threshold is text",
        "params.yaml",
        "params.yaml deployment.min_improvement_threshold",
        files={"params.yaml": "deployment:\n  min_improvement_threshold: a little\n"},
    ),
    Case(
        "params weights are a list",
        "params.yaml",
        "params.yaml deployment.weighted_scoring.weights",
        files={"params.yaml": "deployment:\n  weighted_scoring:\n    weights: [0.5, 0.5]\n"},
    ),
    Case(
        "params guardrail kind unknown",
        "params.yaml",
        "not a guardrail",
        files={"params.yaml": "deployment:\n  guardrails:\n    bleu4: {max: 1}\n"},
    ),
    Case(
        "params push_to_hub not a boolean",
        "params.yaml",
        "push_to_hub",
        hub=True,
        files={"params.yaml": "deployment:\n  huggingface:\n    push_to_hub: perhaps\n"},
    ),
    Case(
        "params not UTF-8", "params.yaml", "not UTF-8", files={"params.yaml": b"deployment:\n  x: \xff\xfe\n"}
    ),
    Case(
        "params alias 'latest'",
        "params.yaml",
        "not a valid MLflow alias",
        files={"params.yaml": "deployment:\n  champion_alias: latest\n"},
    ),
    Case(
        "params tab indentation",
        "params.yaml",
        "not valid YAML",
        files={"params.yaml": "deployment:\n\tmin_improvement_threshold: 0.1\n"},
    ),
    Case(
        "params champion alias is a mapping",
        "params.yaml",
        "not a single value",
        files={"params.yaml": "deployment:\n  champion_alias: {a: 1}\n"},
    ),
    Case("params YAML alias bomb", "params.yaml", "YAML aliases", files={"params.yaml": ALIAS_BOMB}),
    Case(
        "params YAML alias containing itself",
        "params.yaml",
        "contains itself",
        files={"params.yaml": "deployment: &d\n  guardrails: *d\n"},
    ),
    Case(
        "params huge value echoed",
        "params.yaml",
        "params.yaml deployment.champion_alias",
        files={"params.yaml": "deployment:\n  champion_alias: [" + "'x', " * 200_000 + "'y']\n"},
    ),
    Case(
        "params threshold of 400 digits",
        "params.yaml",
        "too large",
        files={"params.yaml": f"deployment:\n  min_improvement_threshold: {HUGE}\n"},
    ),
    Case(
        "params integer of 5000 digits in another section",
        "params.yaml",
        "5001 digits",
        files={"params.yaml": f"training:\n  seed: {LONGER}\ndeployment: {{}}\n"},
    ),
    Case(
        "params date that does not exist",
        "params.yaml",
        "YAML cannot read",
        files={"params.yaml": "training:\n  started: 2001-02-30\n"},
    ),
    Case(
        "params alias v with an Arabic-Indic digit",
        "params.yaml",
        "v<number>",
        files={"params.yaml": 'deployment:\n  champion_alias: "v\u0663"\n'},
    ),
    # --- weights -------------------------------------------------------------------------------
    Case("weight without a value", "weights", "not name=weight", args=("--weights", "bleu1,bleu4=1")),
    Case("weight is text", "weights", "not a number", args=("--weights", "bleu1=abc")),
    Case("weight named twice", "weights", "two weights", args=("--weights", "bleu1=0.5,BLEU-1=0.5")),
    Case("weight infinite", "weights", "not finite", args=("--weights", "bleu1=inf,bleu4=1")),
    Case("weights only separators", "weights", "no weights given", args=("--weights", ",,,")),
    # --- thresholds ----------------------------------------------------------------------------
    Case("threshold NaN", "thresholds", "not finite", args=("--min-improvement-threshold", "nan")),
    Case(
        "threshold overflows to inf",
        "thresholds",
        "not finite",
        args=("--min-improvement-threshold", "1e999"),
    ),
    Case("confidence 0.2", "thresholds", "not a confidence level", args=("--confidence", "0.2")),
    Case(
        "bootstrap resamples 1.5", "thresholds", "not a whole number", args=("--bootstrap-resamples", "1.5")
    ),
    Case("guardrail floor negative", "thresholds", "negative", args=("--guardrails", "bleu4.min=-0.1")),
    # --- output paths --------------------------------------------------------------------------
    Case("output dir with a NUL byte", "paths", "NUL byte", args=("--output-dir", "out\x00x")),
    Case(
        "output dir is a file",
        "paths",
        "--output-dir",
        files={"taken": "a file"},
        args=("--output-dir", "taken/out"),
    ),
    # --- predictions files (--predictions: metrics computed from per-example outputs) -------------
    Case("predictions missing", "predictions", "does not exist", args=("--predictions", "nope.jsonl")),
    Case(
        "predictions with an unknown suffix",
        "predictions",
        "has suffix",
        files={"preds.txt": "a,b\n"},
        args=("--predictions", "preds.txt"),
    ),
    Case(
        "predictions empty",
        "predictions",
        "empty",
        files={"preds.jsonl": "\n\n"},
        args=("--predictions", "preds.jsonl"),
    ),
    Case(
        "predictions JSONL bad line",
        "predictions",
        "preds.jsonl:2",
        args=("--predictions", "preds.jsonl"),
        files={"preds.jsonl": '{"prediction": "a b", "reference": "a b"}\n{oops\n'},
    ),
    Case(
        "predictions reference is a list",
        "predictions",
        "must be a string",
        args=("--predictions", "preds.jsonl"),
        files={"preds.jsonl": '{"prediction": "a", "reference": ["a", "b"]}\n'},
    ),
    Case(
        "predictions CSV without a reference column",
        "predictions",
        "no reference column",
        files={"preds.csv": "prediction,comment\na,b\n"},
        args=("--predictions", "preds.csv"),
    ),
    Case(
        "predictions CSV ragged row",
        "predictions",
        "fields where the header has",
        files={"preds.csv": "prediction,reference\na,b,c\n"},
        args=("--predictions", "preds.csv"),
    ),
    Case(
        "predictions not UTF-8",
        "predictions",
        "not UTF-8",
        files={"preds.jsonl": b"\xff\xfe\x00"},
        args=("--predictions", "preds.jsonl"),
    ),
    Case(
        "predictions key given twice",
        "predictions",
        "'reference' appears twice",
        args=("--predictions", "p.jsonl"),
        files={"p.jsonl": '{"prediction": "a", "reference": "a", "reference": "b"}\n'},
    ),
    Case(
        "predictions integer of 5000 digits",
        "predictions",
        "5001 digits",
        args=("--predictions", "p.jsonl"),
        files={"p.jsonl": f'{{"prediction": "a", "reference": "a", "id": {LONGER}}}\n'},
    ),
    # --- action inputs (entrypoint.py, as the runner runs it) ------------------------------------
    Case(
        "input force-deploy maybe",
        "action inputs",
        "input 'force-deploy'",
        shell="action",
        inputs={"force-deploy": "maybe"},
    ),
    Case(
        "input pr-comment sometimes",
        "action inputs",
        "input 'pr-comment'",
        shell="action",
        inputs={"pr-comment": "sometimes"},
    ),
    Case(
        "input threshold NaN",
        "action inputs",
        "input 'min-improvement-threshold'",
        shell="action",
        inputs={"min-improvement-threshold": "NaN"},
    ),
    Case(
        "input baseline latest",
        "action inputs",
        "input 'baseline'",
        shell="action",
        inputs={"baseline": "latest"},
    ),
    Case(
        "input champion-alias with a space",
        "action inputs",
        "input 'champion-alias'",
        shell="action",
        inputs={"champion-alias": "prod model"},
    ),
    Case(
        "input evaluation-results missing",
        "action inputs",
        "does not exist",
        shell="action",
        inputs={"evaluation-results": "results/nope.json"},
    ),
    Case(
        "input weights (underscore spelling) malformed",
        "action inputs",
        "input 'weights'",
        shell="action",
        underscore_inputs={"weights": "bleu1"},
    ),
    Case(
        "input hf-model-id not owner/name",
        "action inputs",
        "hf-model-id",
        shell="action",
        inputs={"hf-model-id": "just-a-name", "skip-hf-push": "false"},
    ),
    Case(
        "input champion-alias v with an Arabic-Indic digit",
        "action inputs",
        "input 'champion-alias'",
        shell="action",
        inputs={"champion-alias": "v\u0663"},
    ),
    Case(
        "action metric of 400 digits",
        "action inputs",
        "too large",
        shell="action",
        files={"results/evaluations/metrics.json": METRICS_TEXT.replace("0.41", HUGE) + "}"},
    ),
    Case(
        "action metrics integer of 5000 digits",
        "action inputs",
        "5001 digits",
        shell="action",
        files={"results/evaluations/metrics.json": METRICS_TEXT + f', "n": {LONGER}}}'},
    ),
    Case(
        "action params.yaml threshold of 400 digits",
        "action inputs",
        "too large",
        shell="action",
        files={"params.yaml": f"deployment:\n  min_improvement_threshold: {HUGE}\n"},
    ),
    Case(
        "action params.yaml alias bomb",
        "action inputs",
        "YAML aliases",
        shell="action",
        files={"params.yaml": ALIAS_BOMB},
    ),
    # --- event payloads ------------------------------------------------------------------------
    Case(
        "dispatch force maybe",
        "event payloads",
        "workflow_dispatch input 'force'",
        shell="action",
        event_name="workflow_dispatch",
        payload=_dispatch("maybe"),
    ),
    Case(
        "dispatch force 2",
        "event payloads",
        "workflow_dispatch input 'force'",
        shell="action",
        event_name="workflow_dispatch",
        payload=_dispatch(2),
    ),
    Case(
        "dispatch force is a list",
        "event payloads",
        "workflow_dispatch input 'force'",
        shell="action",
        event_name="workflow_dispatch",
        payload=_dispatch(["true"]),
    ),
    # --- adapter configs (the first model deploys: shipping is reached) --------------------------
    Case(
        "adapter config not JSON",
        "adapter configs",
        "adapter_config.json",
        hub=True,
        args=HUB,
        adapter="{r: 4",
    ),
    Case(
        "adapter rank 0",
        "adapter configs",
        "adapter_config.json",
        hub=True,
        args=HUB,
        adapter={**ADAPTER, "r": 0},
    ),
    Case(
        "adapter rank is text",
        "adapter configs",
        "'r'",
        hub=True,
        args=HUB,
        adapter={**ADAPTER, "r": "eight"},
    ),
    Case(
        "adapter target_modules a number",
        "adapter configs",
        "'target_modules'",
        hub=True,
        args=HUB,
        adapter={**ADAPTER, "target_modules": 5},
    ),
    Case(
        "adapter names no base model",
        "adapter configs",
        "base_model_name_or_path",
        hub=True,
        args=HUB,
        adapter={k: v for k, v in ADAPTER.items() if k != "base_model_name_or_path"},
    ),
    Case(
        "adapter config missing",
        "adapter configs",
        "no adapter_config.json",
        hub=True,
        args=HUB,
        adapter=False,
    ),
    Case(
        "adapter config is a list",
        "adapter configs",
        "expected a JSON object",
        hub=True,
        args=HUB,
        adapter=[ADAPTER],
    ),
    Case(
        "adapter config rank given twice",
        "adapter configs",
        "'r' appears twice",
        hub=True,
        args=HUB,
        adapter=json.dumps(ADAPTER)[:-1] + ', "r": 64}',
    ),
    Case(
        "base model neither folder nor Hub id",
        "adapter configs",
        "base-model",
        hub=True,
        args=(*HUB, "--base-model", "../no such/base"),
    ),
    # --- Hub repo ids --------------------------------------------------------------------------
    Case("repo id without owner", "repo ids", "hf-model-id", hub=True, args=("--hf-model-id", "model")),
    Case("repo id with three parts", "repo ids", "hf-model-id", hub=True, args=("--hf-model-id", "a/b/c")),
    Case("repo id with --", "repo ids", "hf-model-id", hub=True, args=("--hf-model-id", "own--er/x")),
    Case(
        "repo id ending .git", "repo ids", "hf-model-id", hub=True, args=("--hf-model-id", "owner/name.git")
    ),
    Case("repo id too long", "repo ids", "hf-model-id", hub=True, args=("--hf-model-id", "o/" + "x" * 95)),
    Case("repo id with a space", "repo ids", "hf-model-id", hub=True, args=("--hf-model-id", "owner/na me")),
    Case(
        "repo id with a newline",
        "repo ids",
        "hf-model-id",
        hub=True,
        args=("--hf-model-id", "owner/x\n::error::y"),
    ),
    Case("repo id path traversal", "repo ids", "hf-model-id", hub=True, args=("--hf-model-id", "../etc")),
    # --- card template paths -------------------------------------------------------------------
    Case(
        "template missing",
        "template paths",
        "card-template",
        hub=True,
        args=(*HUB, "--card-template", "nope.j2"),
    ),
    Case(
        "template is a directory",
        "template paths",
        "card-template",
        hub=True,
        files={"tpl/x": "1"},
        args=(*HUB, "--card-template", "tpl"),
    ),
    Case(
        "template undefined value",
        "template paths",
        "undefined value",
        hub=True,
        files={"card.j2": GOOD_TEMPLATE + "{{ no_such_value }}\n"},
        args=(*HUB, "--card-template", "card.j2"),
    ),
    Case(
        "template syntax error",
        "template paths",
        "is invalid",
        hub=True,
        files={"card.j2": GOOD_TEMPLATE + "{% if %}\n"},
        args=(*HUB, "--card-template", "card.j2"),
    ),
    Case(
        "template without metadata",
        "template paths",
        "must start with",
        hub=True,
        files={"card.j2": "# {{ model_name }}\n"},
        args=(*HUB, "--card-template", "card.j2"),
    ),
    Case(
        "template not UTF-8",
        "template paths",
        "card-template",
        hub=True,
        files={"card.j2": b"---\n\xff\n---\n"},
        args=(*HUB, "--card-template", "card.j2"),
    ),
    Case(
        "template reads HF_TOKEN through lipsum",
        "template paths",
        "unsafe",
        hub=True,
        files={"card.j2": GOOD_TEMPLATE + "{{ lipsum.__globals__['os'].environ['HF_TOKEN'] }}\n"},
        args=(*HUB, "--card-template", "card.j2"),
    ),
    Case(
        "template runs a command through cycler",
        "template paths",
        "unsafe",
        hub=True,
        files={"card.j2": GOOD_TEMPLATE + "{{ cycler.__init__.__globals__.os.popen('id').read() }}\n"},
        args=(*HUB, "--card-template", "card.j2"),
    ),
]

SURFACE_COUNTS = Counter(c.surface for c in CASES)


def _write(path: Path, content: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))


def _model_folder(folder: Path, adapter: Any) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "MLmodel").write_text("flavors: {}\n")
    if adapter is not False:
        _write(folder / "adapter_config.json", ADAPTER if adapter is None else adapter)


def assert_nothing_written(
    mlflow_uri: str,
    registry: str,
    experiment: str,
    out_dir: Path,
    hub_server: Any = None,
    repo: str | None = None,
) -> None:
    client = MlflowClient(tracking_uri=mlflow_uri)
    assert client.get_experiment_by_name(experiment) is None, "an MLflow experiment was created"
    assert client.search_registered_models(f"name = '{registry}'", max_results=1) == [], (
        "a model was registered"
    )
    assert not out_dir.exists(), f"{out_dir} was written"
    if hub_server is not None and repo is not None:
        assert repo not in hub_server.repos, "a Hub repo was created"
        writes = [r for r in hub_server.requests if r.method in ("POST", "PUT", "DELETE") and repo in r.path]
        assert writes == [], f"Hub write requests: {writes}"


def _one_error_line(lines: list[str], prefix: str, needle: str, text: str) -> None:
    errors = [line for line in lines if line.startswith(prefix)]
    assert len(errors) == 1, f"expected one error line, got {errors[:3]!r:.3000}:\n{text[:3000]}"
    assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    # every echoed value is cut (80 characters), and so is the message: never a megabyte "one line"
    assert len(errors[0]) <= 1500, f"an error line of {len(errors[0])} characters"


def _params(shell: str) -> list[Any]:
    return [pytest.param(c, id=c.id) for c in CASES if c.shell == shell]


@pytest.mark.filterwarnings("ignore:Use 'content=:DeprecationWarning")
@pytest.mark.parametrize("case", _params("cli"))
def test_cli_bad_input(
    case: Case, tmp_path, capsys, monkeypatch, mlflow_server, hub_server, registry_name, experiment_name
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", hub_server.token)
    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setenv("GITHUB_SHA", "ab" * 20)
    _model_folder(tmp_path / "model", case.adapter)
    if case.metrics is not None:
        _write(tmp_path / "metrics.json", case.metrics)
    if case.location is not None:
        _write(tmp_path / "location.json", case.location)
    for name, content in case.files.items():
        _write(tmp_path / name, content)
    repo = hub_server.new_repo_id("bad")
    args = [a.replace("{repo}", repo) for a in case.args]
    out_dir = tmp_path / "out"
    flags = [
        "--evaluation-results",
        "metrics.json",
        "--model-artifact-path",
        "location.json",
        "--output-dir",
        str(out_dir),
        "--mlflow-tracking-uri",
        mlflow_server.uri,
        "--registry-name",
        registry_name,
        "--experiment-name",
        experiment_name,
    ]
    if "params.yaml" in case.files:
        flags += ["--config", "params.yaml"]
    if not case.hub:
        flags.append("--skip-hf-push")
    capsys.readouterr()
    code = main([*flags, *args])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    _one_error_line(err.splitlines(), "deploygate: error", case.needle, err)
    assert_nothing_written(
        mlflow_server.uri,
        registry_name,
        experiment_name,
        tmp_path / "taken" / "out" if "taken" in case.files else out_dir,
        hub_server,
        repo,
    )


@pytest.mark.parametrize("case", _params("action"))
def test_action_bad_input(
    case: Case, tmp_path, mlflow_server, hub_server, registry_name, experiment_name
) -> None:
    harness = ActionHarness(tmp_path, mlflow_server, registry_name, experiment_name)
    for name, content in case.files.items():  # relative to the workspace (params.yaml is read from there)
        _write(harness.workspace / name, content)
    repo = hub_server.new_repo_id("bad")
    env = {"HF_TOKEN": hub_server.token, "HF_ENDPOINT": hub_server.url}
    run = harness.run(
        case.inputs,
        underscore_inputs=case.underscore_inputs,
        event_name=case.event_name,
        payload=case.payload,
        env=env,
    )
    text = run.stdout + run.stderr
    assert run.rc == 2, text
    assert "Traceback" not in text
    _one_error_line(run.stdout.splitlines(), "::error ", case.needle, text)
    assert run.outputs["deployed"] == "false" and run.outputs["reason"]
    assert "Failed" in run.summary
    assert_nothing_written(
        mlflow_server.uri,
        registry_name,
        experiment_name,
        harness.workspace / "results" / "deployment",
        hub_server,
        repo,
    )


def test_an_unreadable_event_payload_is_a_warning_not_a_force(
    tmp_path, mlflow_server, registry_name, experiment_name
) -> None:
    """The runner always writes the payload; if it cannot be read, nothing it could say (force) applies."""
    harness = ActionHarness(tmp_path, mlflow_server, registry_name, experiment_name)
    harness.run()  # a champion
    harness.write_workspace(
        {
            k: v - 0.05
            for k, v in json.loads(
                (harness.workspace / "results" / "evaluations" / "metrics.json").read_text()
            ).items()
        }
    )
    event = tmp_path / "broken-event.json"
    event.write_text('{"inputs": {"force": true')
    run = harness.run(event_name="workflow_dispatch", env={"GITHUB_EVENT_PATH": str(event)})
    assert run.rc == 0, run.stdout + run.stderr
    assert any("event payload" in w for w in run.commands("warning"))
    assert run.outputs["decision"] == "skip" and run.outputs["deployed"] == "false"


def test_surface_counts() -> None:
    """Every surface of issue 5 has cases here or in test_bad_input.py (printed for the README)."""
    from tests.integration.test_bad_input import CASES as BASIC

    counts = SURFACE_COUNTS + Counter(
        {"metrics": 10, "location": 5, "weights": 3, "thresholds": 2, "params.yaml": 3}
    )
    assert sum(counts.values()) == len(CASES) + len(BASIC)
    print(f"\nbad inputs: {sum(counts.values())} by surface: {dict(sorted(counts.items()))}")
    for surface in (
        "metrics",
        "location",
        "params.yaml",
        "action inputs",
        "event payloads",
        "adapter configs",
        "weights",
        "thresholds",
        "repo ids",
        "template paths",
        "predictions",
    ):
        assert counts[surface] >= 3, surface
