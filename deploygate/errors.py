"""Every error deploygate raises on purpose, grouped by who has to act, each with its exit code.

Each type is also a builtin (ValueError, RuntimeError, ...) so generic handlers still catch it.
A message is one line: what failed, the value, and the fix. The shells print it and exit with
`exit_code`; only unexpected exceptions get a traceback (and only with -v / RUNNER_DEBUG).
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # something outside the user's input failed (server down, push refused, ...)
EXIT_BAD_INPUT = 2  # the input or configuration is wrong: nothing was written anywhere
EXIT_REJECTED = 3  # the gate decided not to deploy and `fail-on-reject` asked for a red step


class DeployGateError(Exception):
    """Base of all deploygate errors. `exit_code` is what the shells exit with."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message} {hint}".strip() if hint else message)


# --- the user's input: exit 2, nothing written ---------------------------------------------------


class InputError(DeployGateError, ValueError):
    """An input file, flag, action input or params.yaml value is wrong. Raised before any write."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(InputError):
    """A setting (flag, action input, params.yaml, environment) has a bad value."""


class MetricsError(InputError):
    """The evaluation results are missing, malformed, or out of range."""


class ModelSourceError(InputError):
    """The model location names no usable source (run id, model URI or local directory)."""


class AdapterError(InputError):
    """The LoRA adapter cannot be merged as configured (and no fallback was allowed)."""


class IncomparableError(InputError):
    """Candidate and champion were scored differently; comparing them would be meaningless."""


# --- the outside world: exit 1 ---------------------------------------------------------------------


class ExternalError(DeployGateError, RuntimeError):
    """An outside system (MLflow, the Hub, GitHub) failed or refused."""

    exit_code = EXIT_FAILURE


class RegistryError(ExternalError):
    """The MLflow tracking server or model registry failed, refused or is unreachable."""


class HubError(ExternalError):
    """The Hugging Face Hub failed or refused."""


class GitHubError(ExternalError):
    """The GitHub REST API failed or refused (PR comments)."""


class MergeError(DeployGateError, RuntimeError):
    """The LoRA merge failed for a reason that is not the user's input (disk, corrupt file, ...)."""


class Rejected(DeployGateError):
    """The gate decided not to deploy and the caller asked for that to be a failure."""

    exit_code = EXIT_REJECTED
