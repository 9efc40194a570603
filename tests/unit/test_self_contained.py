"""The project needs nothing outside its own folder: no file names a path of the machine it was made
on, and the container test, run in a copy of the repository with no workspace around it and no
container engine, skips with one line instead of failing (what `bash .ci/run` does in a clean clone)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Roots of the machine this project was developed on, and its local package sources, written as their
# parts so that this file holds no such path itself and passes its own check.
_MACHINE_ROOTS = (
    ("work", ""),
    ("opt", "wheels"),
    ("opt", "pypi"),
    ("var", "tmp", "pybase"),
    ("root", ""),
    ("etc", "xdg", "pip"),
)
MACHINE_PATHS = re.compile(
    r"(?<![\w.])(" + "|".join(re.escape("/" + "/".join(p)) for p in _MACHINE_ROOTS) + ")"
)
# The one file allowed to mention the workspace's optional tool (as a relative path beside the checkout).
OPTIONAL_TOOL = re.compile(r"\.\./shared|shared/tools")
MAY_MENTION_TOOL = {"tests/container/test_action_image.py", "README.md", "tests/unit/test_self_contained.py"}


def tracked_files() -> list[str]:
    if not (ROOT / ".git").exists() or shutil.which("git") is None:
        pytest.skip("not a git checkout: no list of tracked files")
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    return [name for name in out.decode().split("\0") if name]


def test_no_file_names_a_path_of_this_machine():
    found = []
    for name in tracked_files():
        path = ROOT / name
        if not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATHS.search(line):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
            if name not in MAY_MENTION_TOOL and OPTIONAL_TOOL.search(line):
                found.append(f"{name}:{number}: {line.strip()[:120]}")
    assert found == []


@pytest.mark.slow
def test_the_container_test_skips_cleanly_in_a_copy_without_the_workspace(tmp_path):
    copy = tmp_path / "clone" / "deploygate"  # nothing beside it: no ../shared
    for name in tracked_files():
        source = ROOT / name
        if source.is_file():
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    assert not (copy.parent / "shared").exists()
    env = {k: v for k, v in os.environ.items() if k not in ("CONTAINER_SMOKE", "PYTHONPATH")}
    env["PATH"] = str(Path(sys.executable).parent)  # the venv only: no docker, no podman
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-m",
            "container",
            "-p",
            "no:cacheprovider",
            "tests/container",
        ],
        cwd=copy,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = done.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ skipped in [\d.]+s", summary), (
        summary
    )  # every container test skipped, none ran or failed
    assert (
        "container test skipped: no container engine (docker with a running daemon, or podman); "
        "no stand-in tool at " in done.stdout
    )
