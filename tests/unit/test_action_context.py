"""What the action shell reads from the event and the environment, without a runner: fork pull
requests, a workflow_dispatch `force`, the secret values it masks."""

from __future__ import annotations

from typing import Any

import pytest

from deploygate.bootstrap import is_fork_pull_request
from deploygate.core.errors import ConfigError
from deploygate.shells.action import dispatch_force, secret_values


def pr(head: Any, base: str = "acme/model") -> dict[str, Any]:
    return {"pull_request": {"head": {"repo": head}, "base": {"repo": {"full_name": base}}}}


@pytest.mark.parametrize(
    ("event", "fork"),
    [
        (pr({"full_name": "acme/model"}), False),  # a branch of the same repository
        (pr({"full_name": "someone/model"}), True),  # a fork
        (pr(None), True),  # the fork was deleted: GitHub sends null, and secrets are withheld all the same
        (pr({"full_name": ""}), False),  # no name to compare: not treated as a fork
        ({"pull_request": "not an object"}, False),
        ({}, False),  # a push: no pull_request at all
    ],
)
def test_fork_pull_requests(event: dict[str, Any], fork: bool) -> None:
    assert is_fork_pull_request(event) is fork


@pytest.mark.parametrize(
    ("event_name", "inputs", "force"),
    [
        ("workflow_dispatch", {"force": "true"}, True),
        ("workflow_dispatch", {"force": True}, True),  # a boolean input arrives as JSON true
        ("workflow_dispatch", {"force": "false"}, False),
        ("workflow_dispatch", {"force-deploy": "yes"}, True),
        ("workflow_dispatch", {"force_deploy": "1"}, True),
        ("workflow_dispatch", {"force": "  ", "force-deploy": "true"}, True),  # blank: the next spelling
        ("workflow_dispatch", {}, False),
        ("push", {"force": "true"}, False),  # only a dispatch forces
        ("workflow_dispatch", "force", False),  # inputs that are not an object
    ],
)
def test_dispatch_force(event_name: str, inputs: object, force: bool) -> None:
    assert dispatch_force(event_name, {"inputs": inputs}) is force


def test_dispatch_force_that_is_not_a_boolean_is_refused_naming_the_input() -> None:
    with pytest.raises(ConfigError, match="workflow_dispatch input 'force'"):
        dispatch_force("workflow_dispatch", {"inputs": {"force": "perhaps"}})


def test_secret_values_are_the_tokens_and_url_passwords_longest_first() -> None:
    env = {
        "HF_TOKEN": "hf_short",
        "INPUT_HF-TOKEN": "hf_from_the_input_longer",
        "MLFLOW_TRACKING_URI": "https://user:pa55word@mlflow.example",
        "MLFLOW_TRACKING_PASSWORD": "   ",  # blank: nothing to mask
        "GITHUB_SHA": "0" * 40,  # not a secret
    }
    assert secret_values(env) == ["hf_from_the_input_longer", "hf_short", "pa55word"]
    assert secret_values({}) == []
