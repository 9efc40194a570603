"""The `deploygate` command: `deploygate [run] ...` (the gate), `doctor`, `demo`.

A shell: it reads argv, the environment and `.env`, calls `app`, prints, and returns an exit
code (0 decided, 1 failure, 2 bad input, 3 rejected with --fail-on-reject). `main(argv)` is what
tests call; `entrypoint()` only wraps it. Tracebacks only for the unexpected, and only with -v.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from deploygate import __version__
from deploygate.config import SETTINGS
from deploygate.errors import EXIT_BAD_INPUT, EXIT_FAILURE, EXIT_OK, EXIT_REJECTED, DeployGateError
from deploygate.github import InertFormatter, inert
from deploygate.redact import redact, remember, secrets_in
from deploygate.result import GateResult

log = logging.getLogger("deploygate.cli")
COMMANDS = ("run", "doctor", "demo", "rollback")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for s in SETTINGS:
        flag = f"--{s.name}"
        default_text = "" if s.default in (None, ()) else f" (default: {s.default if not isinstance(s.default, tuple) else ','.join(s.default)})"
        if s.kind == "bool":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=s.help + f" (default: {str(s.default).lower()})")
        else:
            metavar = s.name.upper().replace("-", "_")
            parser.add_argument(flag, default=None, metavar=metavar, help=s.help + default_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deploygate",
        description="Decide whether a fine-tuned model replaces the production one in MLflow, and ship it.",
        epilog="Commands: run (the default), rollback, doctor, demo. Exit codes: 0 decided, 1 failure, 2 bad input, "
               "3 rejected with --fail-on-reject.",
    )
    parser.add_argument("--version", action="version", version=f"deploygate {__version__}")
    sub = parser.add_subparsers(dest="command")
    run_p = sub.add_parser("run", help="Score, compare, decide, and deploy when the candidate wins (default).")
    _add_setting_flags(run_p)
    run_p.add_argument("-v", "--verbose", action="store_true", help="Debug logging and tracebacks.")
    run_p.add_argument("--reason", default=None, help="Why this run was started (recorded; useful with --force-deploy).")
    doc_p = sub.add_parser("doctor", help="Check the MLflow connection and credentials (and the Hub token).")
    doc_p.add_argument("--config", default=None, help="params.yaml to read mlflow/deployment settings from.")
    doc_p.add_argument("--mlflow-tracking-uri", default=None)
    doc_p.add_argument("--hf-model-id", default=None)
    doc_p.add_argument("-v", "--verbose", action="store_true")
    rb_p = sub.add_parser("rollback", help="Move the champion (and the Hub repo) back to the previous champion.")
    for flag in ("--config", "--registry-name", "--experiment-name", "--champion-alias", "--promotion",
                 "--mlflow-tracking-uri", "--hf-model-id", "--output-dir"):
        rb_p.add_argument(flag, default=None)
    rb_p.add_argument("--skip-hf-push", action=argparse.BooleanOptionalAction, default=None)
    rb_p.add_argument("--to", default=None, metavar="VERSION", help="Roll back to this version (default: the previous champion).")
    rb_p.add_argument("--reason", default=None, help="Why (recorded in MLflow with the actor).")
    rb_p.add_argument("-v", "--verbose", action="store_true")
    demo_p = sub.add_parser("demo", help="Run the gate three times against a local MLflow store; no accounts needed.")
    demo_p.add_argument("--dir", default=None, help="Folder for the demo (default: a new temporary folder).")
    demo_p.add_argument("-v", "--verbose", action="store_true")
    return parser


def _configure_logging(verbose: bool) -> None:
    from deploygate.app import quiet_third_party_logs

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


def print_result(result: GateResult) -> None:
    d = result.decision
    base = f"{result.baseline.score:.4f}" if result.baseline else "none"
    print(f"decision: {d.verdict}  deployed: {str(result.deployed).lower()}  status: {result.status}")
    print(inert(f"reason: {d.reason}"))
    for note in d.notes:
        print(inert(f"note: {note}"))
    print(f"weighted score: {result.candidate.score:.4f}  baseline: {base}  threshold: {result.config.min_improvement_threshold:g}")
    if result.registered_version:
        print(f"model version: {result.config.registry_name} v{result.registered_version} (alias {result.config.champion_alias})")
    if result.hub:
        print(f"hub commit: {result.hub.url}")
    if result.mlflow_run_url:
        print(f"mlflow run: {result.mlflow_run_url}")
    print(f"results: {result.config.output_dir}")


def _given(ns: argparse.Namespace) -> dict[str, Any]:
    return {s.name: getattr(ns, s.attr) for s in SETTINGS if getattr(ns, s.attr, None) is not None}


def cmd_run(ns: argparse.Namespace) -> int:
    from deploygate.app import apply_connection_env, context_from_env, execute, prepare

    cfg, cand = prepare(_given(ns), os.environ)
    apply_connection_env(os.environ)
    ctx = context_from_env(os.environ)
    if ns.reason:
        from dataclasses import replace

        ctx = replace(ctx, reason=ns.reason)
    result = execute(cfg, ctx, os.environ, cand)
    print_result(result)
    if cfg.fail_on_reject and result.decision.verdict == "skip":
        print("deploygate: rejected (--fail-on-reject)", file=sys.stderr)
        return EXIT_REJECTED
    return EXIT_OK


def cmd_rollback(ns: argparse.Namespace) -> int:
    import json
    from dataclasses import replace

    from deploygate.app import apply_connection_env, context_from_env, execute_rollback
    from deploygate.config import build_config
    from deploygate.inputs import load_params
    from deploygate.outputs import write_atomic

    given = {k: getattr(ns, k.replace("-", "_")) for k in (
        "config", "registry-name", "experiment-name", "champion-alias", "promotion", "mlflow-tracking-uri",
        "hf-model-id", "output-dir", "skip-hf-push") if getattr(ns, k.replace("-", "_")) is not None}
    config_path = Path(given.get("config", "params.yaml"))
    params = load_params(config_path, explicit="config" in given)
    cfg = build_config(given, params, env_tracking_uri=os.environ.get("MLFLOW_TRACKING_URI"))
    if ns.to is not None and not ns.to.isdigit():
        from deploygate.errors import ConfigError

        raise ConfigError(f"--to: {ns.to!r} is not a version number; give e.g. --to 3")
    apply_connection_env(os.environ)
    ctx = replace(context_from_env(os.environ), reason=ns.reason)
    result = execute_rollback(cfg, ctx, os.environ, ns.to)
    print(f"rolled back {cfg.registry_name}: v{result.from_version} -> v{result.to_version} (alias {cfg.champion_alias})")
    if result.hub:
        print(f"hub commit: {result.hub.url}")
    if result.mlflow_run_url:
        print(f"mlflow run: {result.mlflow_run_url}")
    record = {k: v for k, v in result.__dict__.items() if k not in ("log_text", "hub")}
    record["hub"] = None if result.hub is None else result.hub.__dict__
    write_atomic(cfg.output_dir / "rollback_info.json", json.dumps(record, indent=2) + "\n")
    return EXIT_OK


def cmd_doctor(ns: argparse.Namespace) -> int:
    from deploygate.doctor import run_doctor

    return run_doctor(ns, os.environ)


def cmd_demo(ns: argparse.Namespace) -> int:
    from deploygate.demo import run_demo

    return run_demo(Path(ns.dir) if ns.dir else None)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in (*COMMANDS, "-h", "--help", "--version"):
        args.insert(0, "run")  # the seed's command line has no subcommand
    parser = build_parser()
    try:
        ns = parser.parse_args(args)
    except SystemExit as exc:  # argparse: usage errors exit 2, --help exits 0
        return int(exc.code or 0)
    if ns.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    verbose = bool(getattr(ns, "verbose", False))
    _configure_logging(verbose)
    with contextlib.suppress(Exception):
        from dotenv import load_dotenv

        load_dotenv(Path.cwd() / ".env", override=False)  # local use, as in the seed; never overrides
    from deploygate.app import SECRET_ENV

    remember(*secrets_in(os.environ, SECRET_ENV, ("MLFLOW_TRACKING_URI",)))  # never printed, never stored
    codes = {"exit": EXIT_OK}
    with error_funnel(verbose, codes):
        handler = {"run": cmd_run, "doctor": cmd_doctor, "demo": cmd_demo, "rollback": cmd_rollback}[ns.command]
        codes["exit"] = handler(ns)
    return codes["exit"]


def entrypoint() -> None:
    sys.exit(main())
