"""The `deploygate` command: `deploygate [run] ...` (the gate), `doctor`, `demo`.

A shell: it reads argv, the environment and `.env`, calls `app`, prints, and returns an exit
code (0 decided, 1 failure, 2 bad input, 3 rejected with --fail-on-reject). `main(argv)` is what
tests call; `entrypoint()` only wraps it. Tracebacks only for the unexpected, and only with -v.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import re
import sys
import traceback
from collections.abc import Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any

from deploygate import __version__
from deploygate.adapters.github_runner import InertFormatter, inert
from deploygate.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_REJECTED,
    ConfigError,
    DeployGateError,
)
from deploygate.core.model import GateResult
from deploygate.core.redact import redact, remember, secrets_in
from deploygate.core.settings import SETTINGS, SETTINGS_BY_NAME, GateConfig, Setting

log = logging.getLogger("deploygate.cli")
COMMANDS = ("run", "doctor", "demo", "rollback", "adopt", "verify")


def _add_setting_flag(parser: argparse.ArgumentParser, s: Setting) -> None:
    flag = f"--{s.name}"
    if s.kind == "bool":
        parser.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=s.help + f" (default: {str(s.default).lower()})",
        )
        return
    default = s.default if not isinstance(s.default, tuple) else ",".join(s.default)
    default_text = "" if s.default in (None, ()) else f" (default: {default})"
    parser.add_argument(
        flag, default=None, metavar=s.name.upper().replace("-", "_"), help=s.help + default_text
    )


def _add_setting_flags(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """The SETTINGS flags (all, or those named), each with the help text of its setting."""
    for s in SETTINGS if names is None else [SETTINGS_BY_NAME[n] for n in names]:
        _add_setting_flag(parser, s)


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="Debug logging, and a traceback for unexpected errors."
    )


EXIT_CODES = "Exit codes: 0 decided, 1 failure, 2 bad input, 3 rejected with --fail-on-reject."


# The settings each command besides the gate takes (the gate takes them all).
DOCTOR_SETTINGS = ("config", "mlflow-tracking-uri", "hf-model-id", "base-model", "max-shard-size")
ROLLBACK_SETTINGS = (
    "config",
    "registry-name",
    "experiment-name",
    "champion-alias",
    "promotion",
    "mlflow-tracking-uri",
    "hf-model-id",
    "output-dir",
    "skip-hf-push",
)
ADOPT_SETTINGS = ("config", "registry-name", "champion-alias", "promotion", "mlflow-tracking-uri")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploygate",
        description="Decide whether a fine-tuned model replaces the production one in MLflow, and ship it.",
        epilog="Commands: run (the default), rollback, adopt, verify, doctor, demo. " + EXIT_CODES,
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"deploygate {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands")
    run_p = _add_run(sub)
    doc_p = sub.add_parser(
        "doctor",
        allow_abbrev=False,
        help="Check the configuration, the MLflow connection and credentials, and the Hub token; "
        "writes nothing.",
    )
    _add_setting_flags(doc_p, DOCTOR_SETTINGS)
    _add_verbose(doc_p)
    _add_rollback(sub)
    _add_adopt(sub)
    _add_verify(sub)
    demo_p = sub.add_parser(
        "demo",
        allow_abbrev=False,
        help="Run the gate three times against a local MLflow store; no accounts needed.",
    )
    demo_p.add_argument("--dir", default=None, help="Folder for the demo (default: a new temporary folder).")
    _add_verbose(demo_p)
    # `deploygate --help` shows the gate's own usage (the command line of the E-commerce-Chatbot deployment
    # script has no subcommand), then every command: the list is made from the subparsers themselves.
    commands = "\n".join(f"  {a.dest:<10} {a.help}" for a in sub._choices_actions)
    run_p.epilog = (
        f"commands (deploygate COMMAND --help for each):\n{commands}\n\n{EXIT_CODES}\n"
        "deploygate doctor checks the setup; deploygate demo shows a whole round on a local store."
    )
    return parser


def _add_run(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    run_p = sub.add_parser(
        "run",
        help="Score, compare, decide, and deploy when the candidate wins (the default command).",
        prog="deploygate [run]",
        usage="%(prog)s [options]",
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Score the candidate's evaluation results, compare them with the champion in MLflow, decide,\n"
        "and when it wins register, promote and push it. Flags beat params.yaml, which beats the defaults.",
    )
    _add_setting_flags(run_p)
    _add_verbose(run_p)
    run_p.add_argument(
        "--reason", default=None, help="Why this run was started (recorded; useful with --force-deploy)."
    )
    return run_p


def _add_rollback(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rb_p = sub.add_parser(
        "rollback",
        allow_abbrev=False,
        help="Move the champion (and the Hub repo) back to the previous champion.",
    )
    _add_setting_flags(rb_p, ROLLBACK_SETTINGS)
    rb_p.add_argument(
        "--to",
        default=None,
        metavar="VERSION",
        help="Roll back to this version (default: the previous champion).",
    )
    rb_p.add_argument("--reason", default=None, help="Why (recorded in MLflow with the actor).")
    _add_verbose(rb_p)


def _add_adopt(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ad_p = sub.add_parser(
        "adopt",
        allow_abbrev=False,
        help="Record the score of a production version deploygate did not promote, "
        "and give it the champion alias (a registry from before deploygate).",
    )
    _add_setting_flags(ad_p, ADOPT_SETTINGS)
    ad_p.add_argument(
        "--version",
        required=True,
        dest="adopt_version",
        metavar="VERSION",
        help="The registry version that is in production.",
    )
    ad_p.add_argument(
        "--score", required=True, help="Its weighted score (0-1), as the gate would compute it."
    )
    ad_p.add_argument("--reason", default=None, help="Why (recorded on the version).")
    _add_verbose(ad_p)


def _add_verify(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ve_p = sub.add_parser(
        "verify",
        allow_abbrev=False,
        help="Check that a Hub revision (or a folder) holds exactly the files deploygate signed, and print "
        "the verdict it carries; exit 0 verified, 1 not.",
    )
    ve_p.add_argument("repo", nargs="?", default=None, metavar="REPO[@REVISION]", help="The Hub repo id.")
    ve_p.add_argument("--revision", default=None, help="A tag, branch or commit (default: main).")
    ve_p.add_argument("--local", default=None, metavar="DIR", help="Check this folder instead of a Hub repo.")
    ve_p.add_argument(
        "--public-key",
        default=None,
        metavar="PATH",
        help="The signer's public key (PEM file) for signing: key.",
    )
    ve_p.add_argument(
        "--identity",
        default=None,
        help="For signing: sigstore, the signer's identity, e.g. https://github.com/ORG/REPO/.github/workflows/"
        "deploy.yml@refs/heads/main.",
    )
    ve_p.add_argument(
        "--issuer", default=None, help="Its OIDC issuer, e.g. https://token.actions.githubusercontent.com."
    )
    _add_verbose(ve_p)


def _configure_logging(verbose: bool) -> None:
    from deploygate.bootstrap import quiet_third_party_logs

    handler = logging.StreamHandler(sys.stderr)
    # one line per record: a CLI step in GitHub Actions has its stderr read for workflow commands too
    handler.setFormatter(InertFormatter("deploygate: %(message)s"))
    logger = logging.getLogger("deploygate")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    quiet_third_party_logs()


@contextlib.contextmanager
def error_funnel(verbose: bool, codes: dict[str, int]) -> Iterator[None]:
    """Map every error to one line on stderr and an exit code (stored in codes['exit'])."""
    try:
        yield
    except DeployGateError as exc:
        print(inert(f"deploygate: error: {exc}"), file=sys.stderr)
        if verbose:
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        codes["exit"] = exc.exit_code
    except KeyboardInterrupt:
        print("deploygate: interrupted", file=sys.stderr)
        codes["exit"] = 130
    except Exception as exc:
        print(inert(redact(f"deploygate: unexpected error: {type(exc).__name__}: {exc}")), file=sys.stderr)
        if verbose:
            print(redact(traceback.format_exc()), file=sys.stderr, end="")
        else:
            print("deploygate: run again with -v for the traceback", file=sys.stderr)
        codes["exit"] = EXIT_FAILURE


def print_result(result: GateResult, env_file_keys: Sequence[str] = ()) -> None:
    d = result.decision
    base = f"{result.baseline.score:.4f}" if result.baseline else "none"
    print(f"decision: {d.verdict}  deployed: {str(result.deployed).lower()}  status: {result.status}")
    print(inert(f"reason: {d.reason}"))
    for note in d.notes:
        print(inert(f"note: {note}"))
    print(
        f"weighted score: {result.candidate.score:.4f}  baseline: {base}  threshold: {result.config.min_improvement_threshold:g}"
    )
    if result.registered_version:
        print(
            f"model version: {result.config.registry_name} v{result.registered_version} (alias {result.config.champion_alias})"
        )
    if result.hub:
        print(f"hub commit: {result.hub.url}")
    if result.hub_export_dir:
        print(f"hub folder: {result.hub_export_dir}")
    print_tracking(result.config, result.mlflow_run_id, result.mlflow_run_url, env_file_keys)
    print(f"results: {result.config.output_dir}")


def print_tracking(
    cfg: GateConfig, run_id: str | None, run_url: str | None, env_file_keys: Sequence[str] = ()
) -> None:
    """Which MLflow was used and why, the run, and for a local store the command that shows it."""
    from deploygate.core.records import local_ui_command
    from deploygate.shells.action import display_url

    source = cfg.tracking_uri_source
    if source == "MLFLOW_TRACKING_URI" and "MLFLOW_TRACKING_URI" in env_file_keys:
        source = "MLFLOW_TRACKING_URI in .env"
    print(inert(f"mlflow: {display_url(cfg.mlflow_tracking_uri)} (from {source})"))
    if run_id:
        print(f"mlflow run: {run_id}" + (f"  {run_url}" if run_url else ""))
    ui = local_ui_command(cfg.mlflow_tracking_uri)
    if ui:
        print(inert(f"browse it: {ui}  (then open http://127.0.0.1:5000)"))


def _given(ns: argparse.Namespace, names: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The settings given on the command line (among `names`, when the command takes only those)."""
    return {
        s.name: getattr(ns, s.attr)
        for s in SETTINGS
        if (names is None or s.name in names) and getattr(ns, s.attr, None) is not None
    }


def cmd_run(ns: argparse.Namespace) -> int:
    from deploygate.bootstrap import apply_connection_env, context_from_env, execute, prepare

    cfg, cand = prepare(_given(ns), os.environ)
    apply_connection_env(os.environ)
    ctx = context_from_env(os.environ)
    if ns.reason:
        from dataclasses import replace

        ctx = replace(ctx, reason=ns.reason)
    result = execute(cfg, ctx, os.environ, cand)
    print_result(result, ns.env_file_keys)
    if cfg.fail_on_reject and result.decision.verdict == "skip":
        print("deploygate: rejected (--fail-on-reject)", file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


def cmd_rollback(ns: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from deploygate.adapters.result_files import write_atomic
    from deploygate.bootstrap import apply_connection_env, context_from_env, execute_rollback, prepare_config

    given = _given(ns, ROLLBACK_SETTINGS)
    cfg = prepare_config(given, os.environ)
    if ns.to is not None and not ns.to.isdigit():
        from deploygate.core.errors import ConfigError

        raise ConfigError(f"--to: {ns.to!r} is not a version number; give e.g. --to 3")
    apply_connection_env(os.environ)
    ctx = replace(context_from_env(os.environ), reason=ns.reason)
    result = execute_rollback(cfg, ctx, os.environ, ns.to)
    print(
        f"rolled back {cfg.registry_name}: v{result.from_version} -> v{result.to_version} (alias {cfg.champion_alias})"
    )
    if result.hub:
        print(f"hub commit: {result.hub.url}")
    print_tracking(cfg, result.mlflow_run_id, result.mlflow_run_url, ns.env_file_keys)
    record = {k: v for k, v in result.__dict__.items() if k not in ("log_text", "hub")}
    record["hub"] = None if result.hub is None else result.hub.__dict__
    write_atomic(cfg.output_dir / "rollback_info.json", json.dumps(record, indent=2) + "\n")
    return EXIT_OK


def cmd_adopt(ns: argparse.Namespace) -> int:
    from dataclasses import replace

    from deploygate.adapters.mlflow_registry import MlflowRegistry
    from deploygate.bootstrap import apply_connection_env, context_from_env, prepare_config, utc_now
    from deploygate.service.adopt import adopt, parse_score

    given = _given(ns, ADOPT_SETTINGS)
    cfg = prepare_config(given, os.environ)
    score = parse_score(ns.score)
    apply_connection_env(os.environ)
    ctx = replace(context_from_env(os.environ), reason=ns.reason)
    registry = MlflowRegistry(cfg.mlflow_tracking_uri)
    registry.check()
    result = adopt(cfg, ctx, registry=registry, version=ns.adopt_version, score=score, clock=utc_now)
    before = f" (its own weighted_score tag said {result.previous_score})" if result.previous_score else ""
    print(
        f"adopted {cfg.registry_name} v{result.version} as {cfg.champion_alias} with score {result.score:.4f}{before}"
    )
    return EXIT_OK


VERIFY_NAMES = {"public-key": "--public-key", "identity": "--identity", "issuer": "--issuer"}


def cmd_verify(ns: argparse.Namespace) -> int:
    from deploygate.bootstrap import build_verifier, execute_verify
    from deploygate.core.render.verdict import verdict_lines

    repo, revision = ns.repo, ns.revision
    if repo and "@" in repo:
        repo, _, at = repo.partition("@")
        revision = revision or at or None
    if (repo is None) == (ns.local is None):
        raise ConfigError("verify: give a Hub repo (REPO[@REVISION]) or --local DIR, one of the two")
    verifier = build_verifier(ns.public_key, ns.identity, ns.issuer, names=VERIFY_NAMES)
    local = Path(ns.local) if ns.local else None
    result = execute_verify(os.environ, verifier, repo_id=repo, revision=revision, local=local)
    print(inert(result.headline()))
    for problem in result.problems[1:]:
        print(inert(f"  also: {problem}"))
    if result.verdict is not None:
        trust = "" if result.verified else ", NOT trustworthy: the files do not match their signature"
        print(f"verdict (deploygate-verdict.json{trust}):")
        for line in verdict_lines(result.verdict):
            print(inert(f"  {line}"))
    return EXIT_OK if result.verified else EXIT_FAILURE


def cmd_doctor(ns: argparse.Namespace) -> int:
    from deploygate.shells.doctor import run_doctor

    return run_doctor(ns, os.environ)


def cmd_demo(ns: argparse.Namespace) -> int:
    from deploygate.shells.demo import run_demo

    return run_demo(Path(ns.dir) if ns.dir else None)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        args = ["run", "--help"]  # the gate's flags, and the list of commands
    if not args or args[0] not in (*COMMANDS, "--version"):
        args.insert(0, "run")  # the deployment script's command line has no subcommand
    parser = build_parser()
    try:
        ns, extra = parser.parse_known_args(args)
        if extra:  # said by the command's own parser, so that its usage line is the one shown
            commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            commands.choices[ns.command].error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # argparse: usage errors exit 2, --help exits 0
        return int(exc.code or 0)
    if ns.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    verbose = bool(getattr(ns, "verbose", False))
    _configure_logging(verbose)
    codes = {"exit": EXIT_OK}
    with error_funnel(verbose, codes):
        # local use, as in the deployment script: .env never overrides the environment
        ns.env_file_keys, ns.env_file_error = (), None
        try:
            ns.env_file_keys = load_env_file(Path.cwd() / ".env", os.environ)
        except ConfigError as exc:
            if ns.command != "doctor":
                raise
            ns.env_file_error = exc  # doctor lists it with the other checks
        from deploygate.bootstrap import SECRET_ENV

        remember(*secrets_in(os.environ, SECRET_ENV, ("MLFLOW_TRACKING_URI",)))  # never printed, never stored
        handler = {
            "run": cmd_run,
            "doctor": cmd_doctor,
            "demo": cmd_demo,
            "rollback": cmd_rollback,
            "adopt": cmd_adopt,
            "verify": cmd_verify,
        }[ns.command]
        codes["exit"] = handler(ns)
    return codes["exit"]


def load_env_file(path: Path, env: MutableMapping[str, str]) -> tuple[str, ...]:
    """Set the variables of a `.env` file that the environment does not already have (as python-dotenv's
    load_dotenv does); return their names. A line python-dotenv cannot parse is a ConfigError naming
    the line (python-dotenv itself would only log it and go on without the variable)."""
    if not path.is_file():
        return ()
    from dotenv import dotenv_values
    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f".env: {path} cannot be read ({exc}); fix or remove the file") from None
    for binding in parse_stream(io.StringIO(text)):
        if binding.error:
            # the line may hold a secret: name the variable, never show the value
            statement = binding.original.string
            name = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=", statement)
            what = f" (the {name.group(1)} line)" if name else ""
            # python-dotenv counts from the blank lines before the statement; name the line it is on
            line = binding.original.line + statement[: len(statement) - len(statement.lstrip())].count("\n")
            raise ConfigError(
                f".env: {path} line {line}{what} cannot be parsed; write it as NAME=value, "
                "with quotes around a value holding spaces, # or quotes, or remove the line"
            )
    added = []
    for key, value in dotenv_values(stream=io.StringIO(text)).items():
        if value is not None and key not in env:
            env[key] = value
            added.append(key)
    return tuple(added)


def entrypoint() -> None:
    sys.exit(main())
