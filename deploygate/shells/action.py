"""The GitHub Action shell: INPUT_* and the event payload in; outputs, summary, PR comment and exit code out.

The runner hands a container action its inputs as `INPUT_<NAME>` (hyphens kept, every value a
string, "" for "not given") and points GITHUB_OUTPUT / GITHUB_STEP_SUMMARY / GITHUB_EVENT_PATH
at mounted files. This module masks every secret before anything is printed, turns inputs into
the same `given` mapping the CLI builds, runs the gate through `deploygate.bootstrap`, and maps every
error to one annotation, one summary section and the CLI's exit codes. It decides nothing itself:
pull requests are told apart by the RunContext, and the pipeline refuses to deploy from them.

`action.yml` and the README tables are generated from the tables here and in `config.SETTINGS`
(`python -m deploygate.shells.action action-yml | inputs-md | outputs-md`); tests keep them in step.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
import urllib.parse
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TextIO

from deploygate.adapters.github_runner import COMMENT_MARKER, InertFormatter, PullRequestComments, Runner
from deploygate.bootstrap import SECRET_ENV as APP_SECRET_ENV
from deploygate.core.errors import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_REJECTED,
    ConfigError,
    DeployGateError,
    ExternalError,
    GitHubError,
)
from deploygate.core.metrics import DEFAULT_WEIGHTS
from deploygate.core.model import GateResult, RunContext
from deploygate.core.redact import redact, remember, secrets_in
from deploygate.core.settings import SETTINGS, Setting, parse_bool

log = logging.getLogger("deploygate.action")

# --- the action's contract: inputs beyond SETTINGS, and outputs ----------------------------------


@dataclass(frozen=True)
class ActionInput:
    """An input only the action has (SETTINGS holds the gate's own)."""

    name: str
    description: str
    default: str | None = None
    kind: Literal["str", "bool"] = "str"
    secret: bool = False


ACTION_INPUTS: tuple[ActionInput, ...] = (
    ActionInput(
        "mode",
        "`run` (score, compare, decide, deploy), `rollback` (move the champion, and the Hub repo, back to the "
        "previous champion; see `rollback-to`) or `verify` (check the signature of `hf-model-id` at `revision` "
        "against `public-key`, or `identity` + `issuer`; sets the `verified` output).",
    ),
    ActionInput(
        "rollback-to",
        "With `mode: rollback`: the registry version to restore. Default: the champion before the current one.",
    ),
    ActionInput(
        "revision",
        "With `mode: verify`: the Hub revision to check (a tag such as v3, a branch, a commit). Default: main.",
    ),
    ActionInput(
        "public-key",
        "With `mode: verify`: the signer's public key (PEM), as a path or as the PEM text (for `signing: key`).",
    ),
    ActionInput(
        "identity",
        "With `mode: verify`: the Sigstore identity that must have signed (for `signing: sigstore`), e.g. "
        "https://github.com/ORG/REPO/.github/workflows/deploy.yml@refs/heads/main.",
    ),
    ActionInput(
        "issuer",
        "With `mode: verify` and `identity`: its OIDC issuer, e.g. https://token.actions.githubusercontent.com.",
    ),
    ActionInput(
        "reason",
        "Why this run was started (recorded with the actor in MLflow, the summary and deployment_info.json); "
        "useful with `force-deploy` and `mode: rollback`. A workflow_dispatch `reason` input is used too.",
    ),
    ActionInput(
        "github-token",
        "Token for the pull request comment (needs `pull-requests: write`). Defaults to the job's GITHUB_TOKEN.",
        "${{ github.token }}",
        secret=True,
    ),
    ActionInput(
        "pr-comment",
        "On pull_request events, post one sticky comment with the verdict and update it on every push.",
        "true",
        kind="bool",
    ),
    ActionInput(
        "hf-token",
        "Hugging Face token with write access to `hf-model-id`. Defaults to the HF_TOKEN / HUGGINGFACE_HUB_TOKEN environment variables.",
        secret=True,
    ),
    ActionInput(
        "mlflow-tracking-username",
        "MLflow (DagsHub) user name. Defaults to the MLFLOW_TRACKING_USERNAME or DAGSHUB_USERNAME environment variables.",
    ),
    ActionInput(
        "mlflow-tracking-password",
        "MLflow (DagsHub) password or token. Defaults to MLFLOW_TRACKING_PASSWORD, DAGSHUB_USER_TOKEN or DAGSHUB_TOKEN.",
        secret=True,
    ),
)
ACTION_INPUTS_BY_NAME: Mapping[str, ActionInput] = {i.name: i for i in ACTION_INPUTS}

OUTPUTS: Mapping[str, str] = {
    "decision": "The verdict: `deploy`, `skip` or `forced` (on pull requests and dry runs, what would have happened); `rollback` in rollback mode.",
    "deployed": "`true` when this run registered, promoted (and pushed) the candidate, else `false`.",
    "reason": "One line: why (or the error when the run failed).",
    "weighted-score": "The candidate's weighted score (0-1, six decimals).",
    "baseline-score": "The champion's recorded weighted score; empty for a first model.",
    "improvement": "Candidate minus baseline score; empty for a first model.",
    "model-version": "The registered model version when deployed, else empty.",
    "mlflow-run-url": "Link to the MLflow run that records this gate decision.",
    "hf-commit-url": "Link to the Hugging Face Hub commit when the model was pushed, else empty.",
    "verified": "With `mode: verify`: `true` when the revision holds exactly the signed files, else `false`; "
    "empty in the other modes.",
}

# Every environment variable that may hold a secret (a superset of app.SECRET_ENV), masked first.
SECRET_ENV: tuple[str, ...] = (
    *APP_SECRET_ENV,
    *(f"INPUT_{i.name.upper()}" for i in ACTION_INPUTS if i.secret),
    *(f"INPUT_{i.name.upper().replace('-', '_')}" for i in ACTION_INPUTS if i.secret),
    "INPUT_SIGNING-KEY",  # a setting (the CLI's --signing-key too) that may hold the PEM text itself
    "INPUT_SIGNING_KEY",
)
# URLs that may carry `user:password@`.
URL_ENV: tuple[str, ...] = ("MLFLOW_TRACKING_URI", "INPUT_MLFLOW-TRACKING-URI", "INPUT_MLFLOW_TRACKING_URI")
FORCE_EVENT_INPUTS = ("force", "force-deploy", "force_deploy")


# --- reading the runner's environment -----------------------------------------------------------


def input_keys(name: str) -> tuple[str, str]:
    """The two spellings of an input: as the runner sets it (hyphens kept) and as /bin/sh would."""
    upper = name.replace(" ", "_").upper()
    return f"INPUT_{upper}", f"INPUT_{upper.replace('-', '_')}"


def read_input(env: Mapping[str, str], name: str) -> str | None:
    """The input's text, or None when absent or empty ("" means: use the default)."""
    for key in dict.fromkeys(input_keys(name)):
        value = env.get(key)
        if value is not None and value.strip():
            return value.strip()
    return None


def _source_name(name: str) -> str:
    return f"input '{name}'"


@dataclass(frozen=True)
class ActionInputs:
    given: dict[str, Any]  # SETTINGS name -> raw text, only those given
    pr_comment: bool = True
    github_token: str | None = None
    hf_token: str | None = None
    mlflow_username: str | None = None
    mlflow_password: str | None = None
    source_names: dict[str, str] = field(default_factory=dict)
    mode: str = "run"
    rollback_to: str | None = None
    reason: str | None = None
    verify: dict[str, str | None] = field(default_factory=dict)  # revision, public-key, identity, issuer


def read_inputs(env: Mapping[str, str]) -> ActionInputs:
    """Every input, both spellings. Bad booleans fail here, naming the input (exit 2)."""
    given: dict[str, Any] = {}
    for setting in SETTINGS:
        raw = read_input(env, setting.name)
        if raw is None:
            continue
        given[setting.name] = parse_bool(raw, _source_name(setting.name)) if setting.kind == "bool" else raw
    pr_comment_raw = read_input(env, "pr-comment")
    pr_comment = True if pr_comment_raw is None else parse_bool(pr_comment_raw, _source_name("pr-comment"))
    return ActionInputs(
        given=given,
        pr_comment=pr_comment,
        github_token=read_input(env, "github-token"),
        hf_token=read_input(env, "hf-token"),
        mlflow_username=read_input(env, "mlflow-tracking-username"),
        mlflow_password=read_input(env, "mlflow-tracking-password"),
        source_names={s.name: _source_name(s.name) for s in SETTINGS},
        mode=_mode(read_input(env, "mode")),
        rollback_to=read_input(env, "rollback-to"),
        reason=read_input(env, "reason"),
        verify={name: read_input(env, name) for name in VERIFY_INPUTS},
    )


VERIFY_INPUTS = ("revision", "public-key", "identity", "issuer")


def _mode(raw: str | None) -> str:
    mode = (raw or "run").lower()
    if mode not in ("run", "rollback", "verify"):
        raise ConfigError(f"input 'mode': {raw!r} is not a mode; use run, rollback or verify")
    return mode


def secret_values(env: Mapping[str, str]) -> list[str]:
    """Secret values present in `env`, longest first: tokens, and passwords inside URLs."""
    return secrets_in(env, SECRET_ENV, URL_ENV)


def display_url(url: str) -> str:
    """A URL without its user info, for logs."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def read_event(env: Mapping[str, str], runner: Runner) -> dict[str, Any]:
    """The event payload at GITHUB_EVENT_PATH; {} (with a warning) when it cannot be read."""
    path = env.get("GITHUB_EVENT_PATH")
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        runner.warning(f"cannot read the event payload {path}: {exc}; continuing without it")
        return {}
    return data if isinstance(data, dict) else {}


def dispatch_force(event_name: str, event: Mapping[str, Any]) -> bool:
    """workflow_dispatch with a `force` input set to true (the payload has it as text or boolean)."""
    if event_name != "workflow_dispatch" or not isinstance(event.get("inputs"), dict):
        return False
    inputs = event["inputs"]
    for name in FORCE_EVENT_INPUTS:
        raw = inputs.get(name)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        return parse_bool(raw, f"workflow_dispatch input '{name}'")
    return False


def dispatch_reason(event_name: str, event: Mapping[str, Any]) -> str | None:
    inputs = event.get("inputs")
    if event_name != "workflow_dispatch" or not isinstance(inputs, dict):
        return None
    reason = inputs.get("reason")
    return str(reason).strip() or None if reason is not None else None


def build_context(env: Mapping[str, str], event: Mapping[str, Any]) -> RunContext:
    from deploygate.bootstrap import context_from_env, is_fork_pull_request

    context = context_from_env(env, event=event)
    event_name = context.event_name
    pr = event.get("pull_request") if isinstance(event.get("pull_request"), dict) else {}
    number = pr.get("number") if pr else None
    if number is None and isinstance(event.get("number"), int) and event_name.startswith("pull_request"):
        number = event["number"]
    return replace(
        context,
        pr_number=number if isinstance(number, int) and not isinstance(number, bool) else None,
        is_fork=is_fork_pull_request(event),
        reason=dispatch_reason(event_name, event) or context.reason,
    )


# --- the run ------------------------------------------------------------------------------------


def _configure_logging(env: Mapping[str, str], stream: TextIO) -> None:
    debug = env.get("RUNNER_DEBUG") == "1"
    # stdout, not stderr: the runner reads both, but only one stream keeps our ::stop-commands:: in order.
    handler = logging.StreamHandler(stream)
    # one line per record, never starting with `::`: a metric name from params.yaml may hold "\n::error::"
    handler.setFormatter(InertFormatter("%(levelname)s %(name)s: %(message)s" if debug else "%(message)s"))
    logger = logging.getLogger("deploygate")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    logger.propagate = False


def _apply_credentials(env: MutableMapping[str, str], inputs: ActionInputs) -> None:
    """Inputs win over the environment; the SDKs read only the environment."""
    if inputs.hf_token:
        env["HF_TOKEN"] = inputs.hf_token
    if inputs.mlflow_username:
        env["MLFLOW_TRACKING_USERNAME"] = inputs.mlflow_username
    if inputs.mlflow_password:
        env["MLFLOW_TRACKING_PASSWORD"] = inputs.mlflow_password


def _empty_outputs(reason: str) -> dict[str, str]:
    outputs = dict.fromkeys(OUTPUTS, "")
    outputs.update(deployed="false", reason=reason)
    return outputs


@dataclass
class _Shell:
    env: MutableMapping[str, str]
    runner: Runner
    inputs: ActionInputs | None = None
    context: RunContext | None = None

    def post_comment(self, body: str) -> None:
        ctx, inputs = self.context, self.inputs
        if ctx is None or inputs is None or not ctx.is_pull_request or not inputs.pr_comment:
            return
        if ctx.pr_number is None or not ctx.repository:
            self.runner.warning(
                "pull request comment skipped: the event payload names no pull request number"
            )
            return
        token = inputs.github_token or self.env.get("GITHUB_TOKEN")
        if not token:
            self.runner.warning(
                "pull request comment skipped: no github-token (and no GITHUB_TOKEN); the verdict is in the step summary"
            )
            return
        api = self.env.get("GITHUB_API_URL") or "https://api.github.com"
        try:
            outcome = PullRequestComments(api, token, ctx.repository).upsert(
                ctx.pr_number, body, COMMENT_MARKER
            )
        except GitHubError as exc:
            self.runner.warning(
                f"pull request comment failed: {exc.message}; the verdict is in the step summary"
            )
            return
        if outcome.status == "forbidden":
            why = (
                "this pull request comes from a fork, whose token is read-only"
                if ctx.is_fork
                else ("the token may not write comments: give the job `permissions: pull-requests: write`")
            )
            self.runner.warning(
                f"pull request comment not posted ({outcome.detail}): {why}. The verdict is in the step summary."
            )
            return
        log.info("pull request comment %s: %s", outcome.status, outcome.url or "")

    def fail(self, exc: BaseException, code: int) -> int:
        """The one error funnel: annotation, summary section, outputs, PR comment, exit code."""
        from deploygate.core.render.report import render_failure

        message = (
            exc.message
            if isinstance(exc, DeployGateError)
            else redact(f"unexpected error: {type(exc).__name__}: {exc}")
        )
        hint = (
            exc.hint
            if isinstance(exc, DeployGateError)
            else "this is a bug in deploygate; please report it with the log"
        )
        ctx = self.context or RunContext(event_name=self.env.get("GITHUB_EVENT_NAME") or "cli")
        # A fork PR gets no secrets: a server refusing it is expected. Report, warn, don't fail.
        warn_only = ctx.is_fork and isinstance(exc, ExternalError)
        if warn_only:
            self.runner.warning(f"{message} (fork pull request: no secrets, so this is reported, not failed)")
            code = EXIT_OK
        else:
            self.runner.error(message if not hint or hint in message else f"{message} {hint}")
        self.runner.set_outputs(_empty_outputs(message))
        self.runner.append_summary(render_failure(message, context=ctx, hint=hint, warning_only=warn_only))
        if self.inputs is not None:
            self.post_comment(
                render_failure(message, context=ctx, hint=hint, comment=True, warning_only=warn_only)
            )
        return code

    def run(self) -> int:
        self.inputs = inputs = read_inputs(self.env)
        event = read_event(self.env, self.runner)
        from deploygate.bootstrap import apply_connection_env, execute, prepare, quiet_third_party_logs

        self.context = context = build_context(self.env, event)
        if inputs.reason:
            self.context = context = replace(context, reason=inputs.reason)
        if inputs.mode == "rollback":
            return self.rollback(inputs)
        if inputs.mode == "verify":
            return self.verify(inputs)
        given = dict(inputs.given)
        if dispatch_force(context.event_name, event):
            given["force-deploy"] = True
        _apply_credentials(self.env, inputs)
        apply_connection_env(self.env)
        # MLflow prints "View run at <tracking URI>" itself, userinfo included; the summary links the run.
        self.env.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        quiet_third_party_logs()

        with self.runner.group("deploygate: inputs"):
            cfg, candidate = prepare(given, self.env, source_names=inputs.source_names)
            pr = (
                f" (PR #{context.pr_number}{', from a fork' if context.is_fork else ''})"
                if context.is_pull_request
                else ""
            )
            log.info("event: %s%s", context.event_name, pr)
            log.info("tracking server: %s", display_url(cfg.mlflow_tracking_uri))
            log.info(
                "registry: %s @%s, baseline: %s, promotion: %s",
                cfg.registry_name,
                cfg.champion_alias,
                cfg.baseline,
                cfg.promotion,
            )
            log.info(
                "threshold: %g, weights: %s",
                cfg.min_improvement_threshold,
                ", ".join(f"{k}={v:g}" for k, v in cfg.weights.values.items()),
            )
            log.info(
                "force: %s, dry run: %s, Hub: %s",
                str(cfg.force_deploy).lower(),
                str(cfg.dry_run).lower(),
                "skipped" if cfg.skip_hf_push or not cfg.hf_model_id else cfg.hf_model_id,
            )
            if context.is_pull_request:
                log.info("pull request: the gate decides and reports; nothing is registered or pushed")

        # Third-party logs may echo user data that looks like a workflow command: stop commands.
        with self.runner.group("deploygate: gate run"), self.runner.quiet():
            result = execute(cfg, context, self.env, candidate)
        return self.report(result)

    def rollback(self, inputs: ActionInputs) -> int:
        from deploygate.bootstrap import (
            apply_connection_env,
            execute_rollback,
            prepare_config,
            quiet_third_party_logs,
        )
        from deploygate.core.render.report import render_rollback

        context = self.context
        assert context is not None
        if context.is_pull_request:
            raise ConfigError(
                "input 'mode': rollback is not allowed on pull_request events; run it from "
                "workflow_dispatch or push"
            )
        target = inputs.rollback_to
        if target is not None and not target.isdigit():
            raise ConfigError(f"input 'rollback-to': {target!r} is not a version number; give e.g. 3")
        _apply_credentials(self.env, inputs)
        apply_connection_env(self.env)
        self.env.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        quiet_third_party_logs()
        cfg = prepare_config(inputs.given, self.env, source_names=inputs.source_names)
        with self.runner.group("deploygate: rollback"), self.runner.quiet():
            result = execute_rollback(cfg, context, self.env, target)
        reason = f"rolled back {cfg.registry_name} v{result.from_version} -> v{result.to_version}"
        outputs = _empty_outputs(reason)
        outputs.update(
            {
                "decision": "rollback",
                "deployed": "true",
                "weighted-score": "" if result.score is None else f"{result.score:.6f}",
                "model-version": result.to_version,
                "mlflow-run-url": result.mlflow_run_url or "",
                "hf-commit-url": result.hub.url if result.hub else "",
            }
        )
        self.runner.set_outputs(outputs)
        self.runner.append_summary(render_rollback(result, cfg, context))
        self.runner.notice(reason)
        return EXIT_OK

    def verify(self, inputs: ActionInputs) -> int:
        from deploygate.bootstrap import build_verifier, execute_verify, prepare_config
        from deploygate.core.render.report import render_verify

        _apply_credentials(self.env, inputs)
        # verify signs nothing: params.yaml's signing settings (a key the verify step has no secret
        # for) must not stop it, so they are set aside; the rest (hf-model-id) reads as for a gate run
        unsigned = {**inputs.given, "signing": "off", "signing-key": ""}
        cfg = prepare_config(unsigned, self.env, source_names=inputs.source_names)
        if not cfg.hf_model_id:
            raise ConfigError(
                "input 'hf-model-id': mode verify needs the Hub repo to check; give hf-model-id"
            )
        given = inputs.verify
        names = {name: _source_name(name) for name in VERIFY_INPUTS}
        verifier = build_verifier(given["public-key"], given["identity"], given["issuer"], names=names)
        with self.runner.group("deploygate: verify"), self.runner.quiet():
            result = execute_verify(
                self.env, verifier, repo_id=cfg.hf_model_id, revision=given["revision"], local=None
            )
        outputs = _empty_outputs(result.headline())
        outputs.update(decision="verify", deployed="false", verified="true" if result.verified else "false")
        if result.verdict is not None:
            registry = result.verdict.get("registry") or {}
            outputs["model-version"] = str(registry.get("version") or "")
        self.runner.set_outputs(outputs)
        self.runner.append_summary(render_verify(result))
        if result.verified:
            self.runner.notice(result.headline())
            return EXIT_OK
        self.runner.error(result.headline())
        return EXIT_FAILURE

    def report(self, result: GateResult) -> int:
        from deploygate.core.render.report import render_comment, render_summary

        self.runner.set_outputs(result.outputs())
        self.runner.append_summary(render_summary(result))
        self.post_comment(render_comment(result))
        for warning in (*result.config.warnings, *result.warnings):
            self.runner.warning(warning)
        verdict = f"{result.decision.verdict} ({result.status}): {result.decision.reason}"
        if result.config.fail_on_reject and result.decision.verdict == "skip":
            self.runner.error(f"rejected (fail-on-reject): {result.decision.reason}")
            return EXIT_REJECTED
        self.runner.notice(verdict)
        return EXIT_OK


def main(environ: MutableMapping[str, str], stdout: TextIO | None = None) -> int:
    """Run the action with the runner's environment (os.environ); return the exit code."""
    runner = Runner(environ, stdout or sys.stdout)
    for secret in secret_values(environ):  # before anything else is printed
        runner.add_mask(secret)
    remember(*secret_values(environ))  # and never printed or stored by deploygate itself
    _configure_logging(environ, runner.stream)
    shell = _Shell(environ, runner)
    try:
        return shell.run()
    except DeployGateError as exc:
        return shell.fail(exc, exc.exit_code)
    except KeyboardInterrupt:
        runner.error("interrupted")
        return 130
    except Exception as exc:
        runner.stream.write(redact(traceback.format_exc()))
        return shell.fail(exc, EXIT_FAILURE)


# --- action.yml and the README tables, generated ------------------------------------------------


def _default_text(setting: Setting) -> str:
    if setting.kind == "weights" and setting.default is None:
        return ",".join(f"{k}={v:g}" for k, v in DEFAULT_WEIGHTS.items())
    if setting.default is None or setting.default == ():
        return ""
    if isinstance(setting.default, bool):
        return str(setting.default).lower()
    if isinstance(setting.default, tuple):
        return ",".join(setting.default)
    return str(setting.default)


def _setting_description(setting: Setting) -> str:
    parts = [setting.help]
    default = _default_text(setting)
    if setting.params:
        parts.append("Else params.yaml `" + "` / `".join(".".join(p) for p in setting.params) + "`.")
    if default:
        parts.append(f"Default: `{default}`.")
    if setting.kind == "bool":
        parts.append("true or false.")
    elif setting.choices:
        parts.append("One of: " + ", ".join(f"`{c}`" for c in setting.choices) + ".")
    return " ".join(parts)


def input_rows() -> list[tuple[str, str, str]]:
    """(name, default as a user sees it, description) for every input, in action.yml order."""
    rows = [(s.name, _default_text(s), _setting_description(s)) for s in SETTINGS]
    rows += [(i.name, i.default or "", i.description) for i in ACTION_INPUTS]
    return rows


def _yaml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def action_yml() -> str:
    """The text of action.yml. Settings inputs have no `default:` on purpose: the runner would
    send it as if the user had typed it, and it would then override params.yaml."""
    lines = [
        "# Generated by `python -m deploygate.shells.action action-yml` from deploygate/core/settings.py SETTINGS and",
        "# deploygate/shells/action.py; tests/action/test_action_yml.py fails when it is out of date.",
        "name: deploygate",
        "description: "
        + _yaml_str(
            "Gate a fine-tuned LLM: score it (weighted BLEU/ROUGE), compare with the MLflow champion, "
            "register and promote it, push it to the Hugging Face Hub."
        ),
        "author: deploygate",
        "branding:",
        "  icon: shield",
        "  color: purple",
        "inputs:",
    ]
    for setting in SETTINGS:
        lines += [
            f"  {setting.name}:",
            f"    description: {_yaml_str(_setting_description(setting))}",
            "    required: false",
        ]
    for item in ACTION_INPUTS:
        lines += [f"  {item.name}:", f"    description: {_yaml_str(item.description)}", "    required: false"]
        if item.default is not None:
            lines.append(f"    default: {_yaml_str(item.default)}")
    lines.append("outputs:")
    for name, description in OUTPUTS.items():
        lines += [f"  {name}:", f"    description: {_yaml_str(description)}"]
    lines += ["runs:", "  using: docker", "  image: Dockerfile", ""]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def inputs_markdown() -> str:
    """The README's inputs table."""
    out = ["| Input | Default | Description |", "|---|---|---|"]
    for name, default, description in input_rows():
        shown = f"`{default}`" if default else ""
        out.append(f"| `{name}` | {_cell(shown)} | {_cell(description)} |")
    return "\n".join(out) + "\n"


def outputs_markdown() -> str:
    """The README's outputs table."""
    out = ["| Output | Description |", "|---|---|"]
    out += [f"| `{name}` | {_cell(description)} |" for name, description in OUTPUTS.items()]
    return "\n".join(out) + "\n"


def _generate(argv: Sequence[str]) -> int:
    makers = {"action-yml": action_yml, "inputs-md": inputs_markdown, "outputs-md": outputs_markdown}
    if len(argv) != 1 or argv[0] not in makers:
        print(f"usage: python -m deploygate.shells.action {{{'|'.join(makers)}}}", file=sys.stderr)
        return 2
    sys.stdout.write(makers[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(_generate(sys.argv[1:]))
