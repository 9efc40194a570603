"""The layers, checked: an import graph of deploygate/ read with ast (nothing is imported).

- core/ imports only core, the standard library, jinja2, yaml and numpy;
- ports.py imports only core and the standard library;
- an adapter never imports another adapter (nor service, bootstrap or a shell);
- service/ imports only core, ports and the standard library: its adapters are handed in;
- only shells/ and bootstrap.py read os.environ (or getenv/putenv) and call sys.exit.

Every import counts, also the lazy ones inside functions and under TYPE_CHECKING: a lazy import is
still a dependency. The checker is tried on small made-up packages first, so that a check that
cannot fail cannot pass here either.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "deploygate"
CORE_THIRD_PARTY = {"jinja2", "yaml", "numpy"}
ENV_NAMES = {"environ", "getenv", "putenv", "unsetenv", "environb"}


def layer_of(module: str) -> str:
    """deploygate.core.x -> core; deploygate.adapters.x -> adapters.x; deploygate.ports -> ports."""
    parts = module.split(".")
    if parts[0] != "deploygate" or len(parts) == 1:
        return "root"
    if parts[1] == "adapters" and len(parts) > 2:
        return f"adapters.{parts[2]}"
    return parts[1]


def imports_of(tree: ast.AST, module: str) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            if target == "deploygate" or (node.level and not node.module):
                found.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, target))
    return found


def env_and_exit(tree: ast.AST) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "os" and node.attr in ENV_NAMES:
                found.append((node.lineno, f"os.{node.attr}"))
            if node.value.id == "sys" and node.attr == "exit":
                found.append((node.lineno, "sys.exit"))
        elif isinstance(node, ast.ImportFrom) and node.module in ("os", "sys"):
            for alias in node.names:
                if alias.name in ENV_NAMES or (node.module == "sys" and alias.name == "exit"):
                    found.append((node.lineno, f"{node.module}.{alias.name}"))
    return found


def allowed(source_layer: str, target: str) -> bool:
    top = target.split(".")[0]
    if top != "deploygate":
        if top in sys.stdlib_module_names or top == "__future__":
            return True
        if source_layer in ("core", "root"):
            return top in CORE_THIRD_PARTY
        # an adapter's own SDK; bootstrap and shells import what they wire; ports and service nothing
        return source_layer not in ("ports", "service")
    target_layer = layer_of(target)
    if target_layer == "root" or target == "deploygate.__version__":  # deploygate itself
        return True
    if source_layer in ("core", "root"):
        return target_layer == "core"
    if source_layer == "ports":
        return target_layer in ("core", "ports")
    if source_layer.startswith("adapters."):
        return target_layer in ("core", "ports", source_layer)
    if source_layer == "service":
        return target_layer in ("core", "ports", "service")
    return True  # bootstrap, shells


def violations(root: Path, package: str = "deploygate") -> list[str]:
    problems: list[str] = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        parts = [package, *rel.with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = [*parts[:-1], "__init__"]
        module = ".".join(p for p in parts if p != "__init__")
        layer = layer_of(module) if len(parts) > 1 else "root"
        if rel.parts[0] == "__main__.py":
            layer = "shells"  # `python -m deploygate` is the CLI
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, target in imports_of(tree, module if rel.name != "__init__.py" else f"{module}.__init__"):
            if not allowed(layer, target):
                problems.append(f"{rel}:{line}: {layer} imports {target}")
        if layer not in ("shells", "bootstrap"):
            problems.extend(f"{rel}:{line}: {layer} uses {what}" for line, what in env_and_exit(tree))
    return problems


def test_the_package_keeps_its_layers() -> None:
    assert violations(PACKAGE) == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "deploygate"
    for name, text in {
        "__init__.py": "",
        "core/__init__.py": "",
        "adapters/__init__.py": "",
        "service/__init__.py": "",
        "shells/__init__.py": "",
        **files,
    }.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("core/rules.py", "import mlflow\n", "core imports mlflow"),
        (
            "core/rules.py",
            "def f():\n    from huggingface_hub import ModelCard\n",
            "core imports huggingface_hub",
        ),
        (
            "core/rules.py",
            "from deploygate.adapters.hub import push\n",
            "core imports deploygate.adapters.hub",
        ),
        ("core/rules.py", "from ..service import gate\n", "core imports deploygate.service"),
        (
            "adapters/hub.py",
            "from deploygate.adapters.registry import X\n",
            "adapters.hub imports deploygate.adapters.registry",
        ),
        ("adapters/hub.py", "from . import registry\n", "adapters.hub imports deploygate.adapters.registry"),
        (
            "service/gate.py",
            "from deploygate.adapters.registry import MlflowRegistry\n",
            "service imports deploygate.adapters.registry",
        ),
        ("service/gate.py", "import mlflow\n", "service imports mlflow"),
        (
            "service/gate.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from deploygate import bootstrap\n",
            "service imports deploygate.bootstrap",
        ),
        ("ports.py", "from deploygate.adapters.hub import Hub\n", "ports imports deploygate.adapters.hub"),
        ("service/gate.py", "import os\nX = os.environ.get('A')\n", "service uses os.environ"),
        ("core/rules.py", "from os import getenv\n", "core uses os.getenv"),
        ("adapters/hub.py", "import sys\ndef f():\n    sys.exit(1)\n", "adapters.hub uses sys.exit"),
    ],
)
def test_the_check_finds_each_kind_of_break(tmp_path: Path, name: str, text: str, expected: str) -> None:
    found = violations(_package(tmp_path, {name: text}))
    assert any(expected in problem for problem in found), found


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("core/rules.py", "import json, re\nimport jinja2, yaml\nfrom deploygate.core import other\n"),
        ("adapters/hub.py", "import huggingface_hub\nfrom deploygate.core.errors import HubError\n"),
        (
            "service/gate.py",
            "from deploygate.ports import Registry\nfrom deploygate.core.model import GateResult\n",
        ),
        (
            "shells/cli.py",
            "import os, sys\nfrom deploygate.adapters.hub import X\nsys.exit(os.environ['A'])\n",
        ),
        ("bootstrap.py", "import os\nfrom deploygate.adapters import hub\nos.environ.get('A')\n"),
    ],
)
def test_the_check_accepts_what_each_layer_may_do(tmp_path: Path, name: str, text: str) -> None:
    assert violations(_package(tmp_path, {name: text})) == []
