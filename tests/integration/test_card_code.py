"""The model card's usage code runs: a real gate run merges a tiny LoRA adapter into a tiny base model
and exports the Hub folder; the card's Python block is executed against that folder (no download).

Without a repo id the card loads the exported folder itself; with one, the repo id is swapped for the
folder, as a user would after downloading it. Both on the pinned transformers (5.x), in a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.gatekit import SEED_METRICS, run_gate
from tests.modelfactory import make_lora_adapter, make_tiny_llama

pytestmark = pytest.mark.slow


def usage_code(card: str) -> str:
    return card.split("## Usage", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def run_code(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}  # a download would fail
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real LoRA adapter (with the tokenizer and its chat template) over a tiny local base model."""
    root = tmp_path_factory.mktemp("card-code")
    base = make_tiny_llama(root / "base", shards=1)
    return make_lora_adapter(base, root / "candidate" / "peft", r=4, alpha=8, with_tokenizer=True)


@pytest.mark.parametrize("repo_id", [None, "acme/tiny-chat"])
def test_the_cards_usage_code_runs_against_the_merged_model(tmp_path, capsys, adapter, repo_id):
    export = tmp_path / "hub-export"
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    extra = ["--hf-export-dir", str(export)]
    if repo_id:
        extra += ["--hf-model-id", repo_id]
    res = run_gate(
        tmp_path,
        capsys,
        uri=store,
        registry="tiny-chat",
        experiment="card-code",
        metrics=SEED_METRICS,
        location={"local_path": str(adapter.parent)},
        extra=extra,
    )
    assert res.code == 0, res.err
    info = res.info()
    assert info["hub"]["export_dir"] == str(export.resolve()) and info["hub"]["commit"] is None

    card = (export / "README.md").read_text()
    code = usage_code(card)
    assert "apply_chat_template(" in code  # the tokenizer has a chat template: the chat path is the one run
    if repo_id is None:
        assert f"model_id = {json.dumps(str(export.resolve()))}" in code  # the folder, not the registry name
        assert '"tiny-chat"' not in code
    else:
        assert f'model_id = "{repo_id}"' in code
        code = code.replace(json.dumps(repo_id), json.dumps(str(export)))
    done = run_code(code, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]

    tracking = card.split("## Tracking", 1)[1].split("##", 1)[0]
    assert f"run `{info['mlflow']['run_id']}` in a local MLflow store" in tracking
    assert "mlflow ui --backend-store-uri sqlite:///" in tracking
    assert (
        "huggingface.co/" not in card.split("## Evaluation", 1)[0].split("---", 2)[2]
    )  # a local base: no link
