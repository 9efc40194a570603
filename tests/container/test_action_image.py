"""The action's image, built from the Dockerfile and run the way the GitHub runner runs a container action.

The runner builds `runs.image` (the Dockerfile, its folder as the context), then runs the image with the
workspace mounted at /github/workspace (also the working directory), the event payload at
/github/workflow/event.json, the file commands under /github/file_commands (GITHUB_OUTPUT,
GITHUB_STEP_SUMMARY, ...), and every input of action.yml as INPUT_<NAME> with hyphens kept. This test
does the same, against a real MLflow server on the host (the container shares the host's network): a
push deploys the first model, then a pull request only decides.

The engine is whatever is here: docker with a running daemon, else podman. The base image is pulled
when it can be; offline, a local copy is used, or the stand-in base that the workspace tool
`../shared/tools/container_smoke.sh` makes when that file exists beside the checkout (it is only ever
asked for the base image). When the PyTorch CPU index is unreachable, the build gets torch 2.13.0 from
the host's own pip sources, served on 127.0.0.1. Without an engine or a base image the test is skipped
with one line saying why. Opt-in: `python -m pytest -m container tests/container` (`bash .ci/run` runs
it; DEPLOYGATE_SMOKE=0 skips it there). SMOKE_SKIP_BUILD=1 reuses an image built before.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.action.harness import GOOD, action_inputs, parse_github_output, pr_payload

pytestmark = [pytest.mark.container, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# Optional: a tool of the workspace this checkout may sit in. Never required; used only for the base image.
STANDIN = Path(os.environ.get("CONTAINER_SMOKE") or ROOT.parent / "shared" / "tools" / "container_smoke.sh")
IMAGE = os.environ.get("SMOKE_IMAGE", "localhost/deploygate-action:test")
TORCH = "torch==2.13.0"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def sh(*cmd: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        done = subprocess.CompletedProcess(cmd, 127, "", f"{type(exc).__name__}: {exc}")
    if check and done.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd[:3])} ... failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done


def base_image() -> str:
    """The Dockerfile's FROM image, fully qualified as a registry would name it."""
    ref = next(
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.upper().startswith("FROM ")
    )
    if "/" not in ref:
        ref = f"docker.io/library/{ref}"
    return ref


@dataclass
class Engine:
    name: str  # docker | podman
    flags: list[str] = field(
        default_factory=list
    )  # for build and run: the OCI runtime / ulimits this host needs

    def __call__(
        self, *args: str, timeout: float = 120, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        return sh(self.name, *args, timeout=timeout, check=check)

    def has(self, image: str) -> bool:
        return self("image", "inspect", image, timeout=60).returncode == 0


def find_engine() -> Engine | None:
    if shutil.which("docker") and sh("docker", "info", timeout=30).returncode == 0:
        return Engine("docker")
    if shutil.which("podman") and sh("podman", "info", timeout=60).returncode == 0:
        return Engine("podman")
    return None


def can_use_standin() -> bool:
    return STANDIN.is_file() and os.access(STANDIN, os.X_OK) and os.geteuid() == 0


def standin_note() -> str:
    """What a skip says of the optional stand-in tool: absent (the usual case outside the workspace) or unusable."""
    if not STANDIN.is_file():
        return f"no stand-in tool at {STANDIN} (optional)"
    return f"the stand-in tool {STANDIN} needs root and an executable file (optional)"


def make_standin_base(minor: str) -> None:
    """The workspace tool's stand-in python:<minor>-slim (it installs podman and runc if needed)."""
    sh(str(STANDIN), "base", minor, timeout=3600, check=True)


def podman_flags(engine: Engine, image: str) -> list[str]:
    """Runtime and ulimits with which podman can start a container here: the defaults first, then runc
    (crun fails on some cgroup setups), then rlimits no higher than this host's hard limits."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[1], 1048576)
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 1048576)
    if nofile < 0 or nproc < 0:  # RLIM_INFINITY
        nofile, nproc = 1048576, 1048576
    runtimes: list[list[str]] = [[]] + (
        [["--runtime", str(shutil.which("runc"))]] if shutil.which("runc") else []
    )
    limits = [
        [],
        ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"],
        ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"],
    ]
    for runtime in runtimes:
        for limit in limits:
            probe = engine(
                "run",
                "--rm",
                *runtime,
                *limit,
                "--network",
                "none",
                "--entrypoint",
                "true",
                image,
                timeout=120,
            )
            if probe.returncode == 0:
                return [*runtime, *limit]
    pytest.skip(
        f"container test skipped: podman cannot start a container of {image} here ({probe.stderr.strip()[-200:]})"
    )


@pytest.fixture(scope="module")
def engine() -> Engine:
    found = find_engine()
    if found is None and can_use_standin():
        make_standin_base(base_image().rsplit(":", 1)[1].split("-")[0])
        found = find_engine()
    if found is None:
        pytest.skip(
            "container test skipped: no container engine (docker with a running daemon, or podman); "
            + standin_note()
        )
    base = base_image()
    if not found.has(base) and found("pull", base, timeout=300).returncode != 0:
        if found.name == "podman" and can_use_standin():
            make_standin_base(base.rsplit(":", 1)[1].split("-")[0])
        if not found.has(base):
            pytest.skip(
                f"container test skipped: {base} cannot be pulled (offline?) and there is no local copy; "
                + (standin_note() if not can_use_standin() else "the stand-in tool made none")
            )
    if found.name == "podman":
        found.flags = podman_flags(found, base)
    return found


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def torch_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """Build arguments for torch: none when the PyTorch CPU index answers; else a one-package index on
    127.0.0.1 holding the CPU wheel that the host's pip finds (its own cache, find-links or mirror)."""
    if os.environ.get("TORCH_INDEX_URL"):
        yield ["--build-arg", f"TORCH_INDEX_URL={os.environ['TORCH_INDEX_URL']}"]
        return
    try:
        urllib.request.urlopen(f"{TORCH_CPU_INDEX}/torch/", timeout=15).close()
        yield []
        return
    except OSError:
        pass
    root = tmp_path_factory.mktemp("torch-index")
    sh(
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "-d",
        str(root / "torch"),
        TORCH,
        timeout=1800,
        check=True,
    )
    wheels = list((root / "torch").glob("torch-*.whl"))
    if not wheels or "+cpu" not in wheels[0].name:
        pytest.skip(
            f"container test skipped: {TORCH_CPU_INDEX} is unreachable and this host's pip has no CPU "
            f"build of {TORCH} (found: {[w.name for w in wheels]})"
        )
    link = wheels[0].name.replace("+", "%2B")
    (root / "torch" / "index.html").write_text(
        f'<html><body><a href="{link}">{wheels[0].name}</a></body></html>\n'
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:  # the build shares the host's network, so 127.0.0.1 is this server (pip trusts loopback over http)
        yield ["--build-arg", f"TORCH_INDEX_URL=http://127.0.0.1:{server.server_address[1]}/"]
    finally:
        server.shutdown()


def say(request: pytest.FixtureRequest, text: str) -> None:
    """A line on the terminal even under output capture (the figures the README quotes)."""
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        print(f"\ncontainer: {text}", flush=True)


@pytest.fixture(scope="module")
def image(engine: Engine, torch_index: list[str], request: pytest.FixtureRequest) -> str:
    if os.environ.get("SMOKE_SKIP_BUILD") == "1" and engine.has(IMAGE):
        return IMAGE
    start = time.monotonic()
    pull = ["--pull=never"] if engine.name == "podman" else []  # the base is local by now
    engine(
        "build",
        *engine.flags,
        *pull,
        "--network",
        "host",
        *torch_index,
        "-t",
        IMAGE,
        "-f",
        str(ROOT / "Dockerfile"),
        str(ROOT),
        timeout=3600,
        check=True,
    )
    size = engine("image", "inspect", "--format", "{{.Size}}", IMAGE, check=True).stdout.strip()
    say(
        request,
        f"{engine.name} built {IMAGE} in {time.monotonic() - start:.0f} s; image {int(size) / 1e6:.0f} MB",
    )
    return IMAGE


@dataclass
class ContainerRun:
    rc: int
    log: str
    outputs: dict[str, str]
    summary: str
    seconds: float


def run_action(
    engine: Engine,
    image: str,
    tmp: Path,
    workspace: Path,
    event_name: str,
    payload: dict[str, Any],
    inputs: dict[str, str],
    env: dict[str, str],
) -> ContainerRun:
    """One step, as the runner runs a container action."""
    temp = tmp / f"runner-{uuid.uuid4().hex[:8]}"
    for sub in ("_github_home", "_github_workflow", "_runner_file_commands"):
        (temp / sub).mkdir(parents=True)
    (temp / "_github_workflow" / "event.json").write_text(json.dumps(payload))
    token = uuid.uuid4().hex
    commands = temp / "_runner_file_commands"
    for name in ("set_output", "step_summary", "set_env", "add_path", "save_state"):
        (commands / f"{name}_{token}").write_text("")
    runner_env = {
        "HOME": "/github/home",
        "GITHUB_WORKSPACE": "/github/workspace",
        "GITHUB_EVENT_PATH": "/github/workflow/event.json",
        "GITHUB_OUTPUT": f"/github/file_commands/set_output_{token}",
        "GITHUB_STEP_SUMMARY": f"/github/file_commands/step_summary_{token}",
        "GITHUB_ENV": f"/github/file_commands/set_env_{token}",
        "GITHUB_PATH": f"/github/file_commands/add_path_{token}",
        "GITHUB_STATE": f"/github/file_commands/save_state_{token}",
        "RUNNER_TEMP": "/github/runner_temp",
        "RUNNER_OS": "Linux",
        "CI": "true",
        "GITHUB_ACTIONS": "true",
        "GITHUB_EVENT_NAME": event_name,
        "GITHUB_REPOSITORY": "octo/gate",
        "GITHUB_SHA": uuid.uuid4().hex + "00000000",
        "GITHUB_REF": "refs/heads/main",
        "GITHUB_ACTOR": "octocat",
        "GITHUB_RUN_ID": "1",
        "GITHUB_SERVER_URL": "https://github.com",
        "GITHUB_API_URL": "http://127.0.0.1:9",
    }
    for name, spec in action_inputs().items():  # every declared input: its value, its default, or ""
        default = spec.get("default")
        runner_env[f"INPUT_{name.upper()}"] = inputs.get(
            name, "" if default is None or "${{" in str(default) else str(default)
        )
    runner_env.update(env)
    args = [f"--env={k}={v}" for k, v in runner_env.items()]
    mounts = [
        f"{temp}:/github/runner_temp",
        f"{temp / '_github_home'}:/github/home",
        f"{temp / '_github_workflow'}:/github/workflow",
        f"{commands}:/github/file_commands",
        f"{workspace}:/github/workspace",
    ]
    start = time.monotonic()
    done = engine(
        "run",
        "--rm",
        *engine.flags,
        "--network",
        "host",
        "--workdir",
        "/github/workspace",
        *args,
        *(f"--volume={m}" for m in mounts),
        image,
        timeout=900,
    )
    seconds = time.monotonic() - start
    output = (commands / f"set_output_{token}").read_text()
    return ContainerRun(
        done.returncode,
        done.stdout + done.stderr,
        parse_github_output(output),
        (commands / f"step_summary_{token}").read_text(),
        seconds,
    )


def test_the_image_deploys_on_push_and_only_decides_on_a_pull_request(engine, image, tmp_path, request):
    mlflow_server = request.getfixturevalue("mlflow_server")  # only once there is an image to run
    workspace = tmp_path / "workspace"
    (workspace / "results" / "evaluations").mkdir(parents=True)
    (workspace / "results" / "evaluations" / "metrics.json").write_text(json.dumps(GOOD))
    (workspace / "model").mkdir()
    (workspace / "model" / "adapter_config.json").write_text(json.dumps({"r": 8, "lora_alpha": 16}))
    (workspace / "results" / "fine_tuned_model_location.json").write_text(
        json.dumps({"local_path": "../model", "model_name": "tiny", "fine_tuned": True})
    )
    registry = f"container-{uuid.uuid4().hex[:8]}"
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri, "HF_TOKEN": "hf_container_sentinel_token"}
    inputs = {"registry-name": registry, "skip-hf-push": "true"}

    push = run_action(engine, image, tmp_path, workspace, "push", {"ref": "refs/heads/main"}, inputs, env)
    assert push.rc == 0, push.log[-4000:]
    assert push.outputs["deployed"] == "true" and push.outputs["model-version"] == "1", push.outputs
    first = push.log.lstrip().splitlines()[0]
    assert first == "::add-mask::hf_container_sentinel_token", first  # masked before anything else
    assert "hf_container_sentinel_token" not in push.log.replace(first, "")
    info = json.loads((workspace / "results" / "deployment" / "deployment_info.json").read_text())
    assert info["status"] == "deployed" and info["context"]["event"] == "push"
    assert re.search(r"deploy", push.summary, re.I)

    pr = run_action(
        engine,
        image,
        tmp_path,
        workspace,
        "pull_request",
        pr_payload(),
        {**inputs, "pr-comment": "false"},
        env,
    )
    assert pr.rc == 0, pr.log[-4000:]
    assert pr.outputs["deployed"] == "false", pr.outputs
    assert "Would not deploy (verdict only)" in pr.summary
    say(request, f"runs that decide: push {push.seconds:.1f} s, pull request {pr.seconds:.1f} s")


def test_the_image_merges_a_real_adapter_exactly_as_peft_does(engine, image, tmp_path, request):
    """The merge path inside the image (whose build cuts what no code path loads): a real peft adapter on a
    tiny Llama, merged in the container and exported, equals peft's merge_and_unload run here, tensor for
    tensor."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from tests.modelfactory import make_lora_adapter, make_tiny_llama

    mlflow_server = request.getfixturevalue("mlflow_server")
    workspace = tmp_path / "workspace"
    (workspace / "results" / "evaluations").mkdir(parents=True)
    (workspace / "results" / "evaluations" / "metrics.json").write_text(json.dumps(GOOD))
    base = make_tiny_llama(workspace / "base", shards=2)
    make_lora_adapter(base, workspace / "adapter", with_tokenizer=True)
    (workspace / "results" / "fine_tuned_model_location.json").write_text(
        json.dumps({"local_path": "../adapter", "model_name": "tiny", "fine_tuned": True})
    )
    inputs = {
        "registry-name": f"container-merge-{uuid.uuid4().hex[:8]}",
        "base-model": "base",
        "hf-export-dir": "export",
    }
    run = run_action(
        engine,
        image,
        tmp_path,
        workspace,
        "push",
        {"ref": "refs/heads/main"},
        inputs,
        {"MLFLOW_TRACKING_URI": mlflow_server.uri},
    )
    assert run.rc == 0, run.log[-4000:]
    assert run.outputs["deployed"] == "true", run.outputs
    exported = workspace / "export"
    assert {"config.json", "README.md", "tokenizer.json"} <= {p.name for p in exported.iterdir()}
    assert list(exported.glob("*.safetensors")), sorted(p.name for p in exported.iterdir())

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    reference = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype="auto"), str(workspace / "adapter")
    ).merge_and_unload()
    expected = dict(reference.state_dict())
    written: dict[str, Any] = {}
    for shard in sorted(exported.glob("*.safetensors")):
        written.update(load_file(shard))
    assert set(written) == set(expected), sorted(set(written) ^ set(expected))
    for name, tensor in written.items():
        assert tensor.dtype == expected[name].dtype and torch.equal(tensor, expected[name]), name
    say(
        request,
        f"a merge and export in the image: {run.seconds:.1f} s ({len(written)} tensors equal to peft's)",
    )
