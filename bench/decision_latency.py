"""Decision latency vs history size: does reading the baseline grow with the number of past runs?

Two real `mlflow server` processes (sqlite): one holding 10 past deploygate runs, one holding
10,000, each with a registered model of 100 versions and a champion alias. For each, time the
gate's reads that lead to a decision (champion + score, promotion history; and the best-ever
query), median of repeated calls in this process, and print the ratio 10,000 / 10.
Goal: ratio under 1.3 (no growth with history).

    .venv/bin/python bench/decision_latency.py [--runs 10000] [--versions 100] [--repeat 50] [--cache bench/out]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploygate.adapters.mlflow_registry import MlflowRegistry
from deploygate.core.decision import Policy, decide
from deploygate.core.records import TAG_SCORE
from tests.mlflow_fixtures import start_mlflow_server, stop_mlflow_server

EXPERIMENT = "deploygate"
MODEL = "bench-model"


def populate(db: Path, runs: int, versions: int) -> None:
    """Fill a sqlite store directly (the REST API would take minutes for 10,000 runs)."""
    from mlflow.entities import Metric, Param, RunStatus, RunTag
    from mlflow.store.model_registry.sqlalchemy_store import SqlAlchemyStore as RegistryStore
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    uri = f"sqlite:///{db}"
    store = SqlAlchemyStore(uri, str(db.parent / "artifacts"))
    exp_id = store.create_experiment(EXPERIMENT)
    run_ids = []
    for i in range(runs):
        run = store.create_run(
            exp_id, user_id="bench", start_time=1_700_000_000_000 + i, tags=[], run_name=f"gate-{i}"
        )
        score = 0.2 + (i % 997) / 10_000
        store.log_batch(
            run.info.run_id,
            metrics=[Metric("weighted_score", score, 0, 0), Metric("bleu4", score, 0, 0)],
            params=[Param("min_improvement_threshold", "0.001")],
            tags=[RunTag("deploygate.decision", "skip")],
        )
        store.update_run_info(run.info.run_id, RunStatus.FINISHED, 1_700_000_000_500 + i, None)
        run_ids.append(run.info.run_id)
    reg = RegistryStore(uri)
    reg.create_registered_model(MODEL)
    from mlflow.entities.model_registry import ModelVersionTag

    for v in range(versions):
        mv = reg.create_model_version(
            MODEL,
            f"{store.get_run(run_ids[v % runs]).info.artifact_uri}/model",
            run_id=run_ids[v % runs],
            tags=[ModelVersionTag(TAG_SCORE, repr(0.2 + v / 1000))],
        )
    reg.set_registered_model_alias(MODEL, "champion", mv.version)


def read_once(reg: MlflowRegistry) -> dict[str, float]:
    """The reads one gate run does before deciding, timed per baseline policy."""
    t = time.perf_counter()
    base = reg.champion_baseline(MODEL, "champion")
    reg.history(MODEL)
    decide(0.5, base, Policy())
    champion = time.perf_counter() - t
    t = time.perf_counter()
    base = reg.best_ever_baseline(EXPERIMENT)
    decide(0.5, base, Policy())
    return {"champion": champion, "best-ever": time.perf_counter() - t}


def time_interleaved(uris: dict[int, str], repeat: int) -> dict[int, dict[str, float]]:
    """Alternate between the servers so that machine load hits both alike; medians per server."""
    regs = {n: MlflowRegistry(uri) for n, uri in uris.items()}
    samples: dict[int, dict[str, list[float]]] = {n: {"champion": [], "best-ever": []} for n in uris}
    for reg in regs.values():
        reg.check()
        read_once(reg)  # warm up
    for _ in range(repeat):
        for n, reg in regs.items():
            for key, value in read_once(reg).items():
                samples[n][key].append(value)
    return {n: {k: statistics.median(v) for k, v in s.items()} for n, s in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(allow_abbrev=False)
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--small-runs", type=int, default=10)
    ap.add_argument("--versions", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument(
        "--cache",
        default=None,
        help="keep the populated stores here and reuse them (populating 10,000 runs takes minutes)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.cache) if args.cache else Path(tmp)
        servers = {}
        try:
            for runs in (args.small_runs, args.runs):
                store = root / f"h{runs}-v{args.versions}"
                if not (store / "mlflow.db").exists():
                    store.mkdir(parents=True, exist_ok=True)
                    t = time.perf_counter()
                    populate(store / "mlflow.db", runs, args.versions)
                    print(
                        f"populated {runs} runs + {args.versions} versions in {time.perf_counter() - t:.1f} s",
                        flush=True,
                    )
                servers[runs] = start_mlflow_server(store)
            results = time_interleaved({n: s.uri for n, s in servers.items()}, args.repeat)
        finally:
            for server in servers.values():
                stop_mlflow_server(server)
    small, big = results[args.small_runs], results[args.runs]
    print(
        f"\n{'baseline':<10} {args.small_runs:>8} runs {args.runs:>8} runs   ratio  (median of {args.repeat}, interleaved)"
    )
    for key in ("champion", "best-ever"):
        print(
            f"{key:<10} {small[key] * 1000:>8.2f} ms {big[key] * 1000:>8.2f} ms   {big[key] / small[key]:.2f}"
        )


if __name__ == "__main__":
    main()
