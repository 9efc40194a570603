"""`deploygate demo`, the README's main-job command: no accounts, no servers, a local store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deploygate.shells.cli import main

pytestmark = pytest.mark.slow


def test_demo_deploys_rejects_and_replaces(tmp_path, capsys):
    # a second demo in the same folder starts over (in a new process, as a user would run it:
    # MLflow caches its store per URI inside a process, and the demo deletes that store)
    second = [sys.executable, "-m", "deploygate", "demo", "--dir", str(tmp_path)]
    for run in (
        lambda: main(["demo", "--dir", str(tmp_path)]),
        lambda: subprocess.run(second, capture_output=True, timeout=600, check=False).returncode,
    ):
        assert run() == 0
        decisions = [
            json.loads((tmp_path / "results" / n / "deployment_info.json").read_text())
            for n in ("1-first", "2-worse", "3-better")
        ]
        assert [(d["decision"], d["registry"]["version"]) for d in decisions] == [
            ("deploy", "1"),
            ("skip", None),
            ("deploy", "2"),
        ]
    out = capsys.readouterr().out  # the first, in-process run's
    assert "browse the runs: mlflow ui --backend-store-uri sqlite:///" in out
    exported = sorted(p.name for p in (tmp_path / "hub-export").iterdir())
    assert exported == ["1-first", "3-better"]
    folder = tmp_path / "hub-export" / "3-better"
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    card = (folder / "README.md").read_text()
    assert "Champion (version 1)" in card
    assert f'model_id = "{folder.resolve()}"' in card  # exported, not pushed: the card loads this folder
    assert "huggingface.co/deploygate-demo" not in card  # the local base is not linked to a Hub page
    assert "in a local MLflow store (browse it with `mlflow ui --backend-store-uri sqlite:///" in card
    info = json.loads((tmp_path / "results" / "3-better" / "deployment_info.json").read_text())
    assert info["hub"]["export_dir"] == str(folder.resolve()) and info["registry"]["previous_version"] == "1"

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    import torch

    assert model.generate(torch.tensor([[1, 6, 7]]), max_new_tokens=2, do_sample=False).shape[1] == 5
