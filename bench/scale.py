"""Benchmark: a full deploy (download, merge, push) of a 7B-shaped model on a runner's disk and memory.

Builds once (cached under --cache) a random bf16 Llama with Llama-2-7B's shapes (hidden 4096, 32 layers,
vocab 32000: ~13.5 GB in ~4 GB shards, written tensor by tensor, never instantiated) and a rank-16 LoRA
adapter on every linear layer, serves the base from the local Hub-compatible server (tests/hub_server.py,
LFS objects on disk), and runs `deploygate` in a child process against it: a local MLflow store, the base
on the Hub, a push to a new repo. While it runs, the disk used under the child's work folder (TMPDIR) and
Hub cache (HF_HOME) is sampled (allocated blocks), and its peak RSS is read from /proc/<pid>/status
(VmHWM: the child's own high-water mark; wait4's ru_maxrss would also count this process's memory at
the fork, which holds the Hub server's uploads). Prints peak
disk / model size (goal <= 0.4), peak RSS (goal <= 1.5 GB) and the time against `cp` of the same bytes
and, with --peft, against peft's merge_and_unload + save_pretrained in a child process.

    .venv/bin/python bench/scale.py --small          # a ~1 GB model with the same structure
    .venv/bin/python bench/scale.py --small --peft   # and peft's merge of it
    .venv/bin/python bench/scale.py                  # the 7B shape (~13.5 GB; needs ~45 GB of free disk)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from merge import TARGETS, llama_shapes, write_safetensors  # noqa: E402

from tests.diskuse import DiskSampler  # noqa: E402

LLAMA_7B = {
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32000,
}
SMALL = {**LLAMA_7B, "hidden_size": 2048, "intermediate_size": 5504, "num_hidden_layers": 8}
BASE_SHARD = {"full": 4_000_000_000, "small": 300_000_000}  # the base's own shards: 3-5 of them
OUT_SHARD = {"full": "2GB", "small": "150MB"}  # the output's: independent of the base's
DISK_GOAL, RSS_GOAL, TIME_GOAL = 0.4, 1_500_000_000, 0.5  # TIME_GOAL: deploy / peft's merge


def build_base(folder: Path, shape: dict[str, int], shard_bytes: int) -> Path:
    """The base model in save_pretrained's layout (sharded safetensors + index), cached: built once."""
    if (folder / "model.safetensors.index.json").is_file():
        return folder
    from transformers import GenerationConfig, LlamaConfig

    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    LlamaConfig(
        **shape, tie_word_embeddings=False, max_position_embeddings=4096, dtype="bfloat16"
    ).save_pretrained(tmp)
    GenerationConfig(bos_token_id=1, eos_token_id=2).save_pretrained(tmp)
    groups: list[dict[str, tuple[int, ...]]] = [{}]
    size = 0
    for name, dims in llama_shapes(shape).items():
        nbytes = 2 * int(math.prod(dims))
        if groups[-1] and size + nbytes > shard_bytes:
            groups.append({})
            size = 0
        groups[-1][name] = dims
        size += nbytes
    weight_map: dict[str, str] = {}
    for i, group in enumerate(groups, 1):
        name = f"model-{i:05d}-of-{len(groups):05d}.safetensors"
        write_safetensors(tmp / name, group, "BF16", seed=i)
        weight_map |= dict.fromkeys(group, name)
        print(f"  built {name} ({sum(2 * int(math.prod(d)) for d in group.values()) / 1e9:.2f} GB)")
    total = sum(2 * int(math.prod(d)) for d in llama_shapes(shape).values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    tmp.rename(folder)
    return folder


def build_adapter(folder: Path, shape: dict[str, int], base_name: str) -> Path:
    """A rank-16 LoRA adapter on every linear layer (peft's own config file), B non-zero."""
    if (folder / "adapter_model.safetensors").is_file():
        return folder
    from peft import LoraConfig

    folder.mkdir(parents=True)
    LoraConfig(r=16, lora_alpha=32, target_modules=list(TARGETS), task_type="CAUSAL_LM").save_pretrained(
        folder
    )
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base_name
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2))
    lora: dict[str, tuple[int, ...]] = {}
    for name, (out_f, in_f) in (
        (n, s) for n, s in llama_shapes(shape).items() if n.split(".")[-2] in TARGETS
    ):
        module = name.removesuffix(".weight")
        lora[f"base_model.model.{module}.lora_A.weight"] = (16, in_f)
        lora[f"base_model.model.{module}.lora_B.weight"] = (out_f, 16)
    write_safetensors(folder / "adapter_model.safetensors", lora, "F32", seed=99)
    return folder


def run_measured(argv: list[str], *, env: dict[str, str], cwd: Path, log: Path) -> tuple[float, int, int]:
    """Run a child; (seconds, peak RSS from its VmHWM, exit code). Its output goes to `log`, each line
    after the seconds since the start (where the time goes)."""
    with log.open("w") as out:
        start = time.perf_counter()
        process = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        assert process.stdout is not None
        stream = process.stdout

        def copy() -> None:
            for line in stream:
                out.write(f"{time.perf_counter() - start:8.2f} {line}")

        copier = threading.Thread(target=copy, daemon=True)
        copier.start()
        peak = 0
        while process.poll() is None:
            with contextlib.suppress(OSError, ValueError, StopIteration):
                status = Path(f"/proc/{process.pid}/status").read_text()
                line = next(x for x in status.splitlines() if x.startswith("VmHWM:"))
                peak = max(peak, int(line.split()[1]) * 1024)
            time.sleep(0.02)
        seconds = time.perf_counter() - start
        copier.join()
        return seconds, peak, process.returncode


@dataclass(frozen=True)
class Deploy:
    seconds: float
    peak_rss: int
    peak_disk: int
    log_tail: list[str]


def deploy(
    hub_url: str, token: str, base_repo: str, target: str, adapter: Path, run_dir: Path, shard: str
) -> Deploy:
    """`deploygate` in a child process: gate (local MLflow store), merge, push; measured from outside."""
    run_dir.mkdir(parents=True)
    work, cache = run_dir / "work", run_dir / "hf-home"
    work.mkdir()
    cache.mkdir()
    from tests.gatekit import SEED_METRICS

    (run_dir / "metrics.json").write_text(json.dumps(SEED_METRICS))
    (run_dir / "location.json").write_text(json.dumps({"local_path": str(adapter)}))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "MLFLOW_", "HF_"))}
    env |= {"HF_ENDPOINT": hub_url, "HF_TOKEN": token, "HF_HUB_DISABLE_XET": "1", "TMPDIR": str(work)}
    env |= {"HF_HOME": str(cache), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    argv = [sys.executable, "-m", "deploygate", "--evaluation-results", str(run_dir / "metrics.json")]
    argv += ["--model-artifact-path", str(run_dir / "location.json"), "--output-dir", str(run_dir / "out")]
    argv += ["--mlflow-tracking-uri", f"sqlite:///{run_dir / 'mlflow.db'}", "--registry-name", "scale"]
    argv += ["--experiment-name", "scale", "--hf-model-id", target, "--base-model", base_repo]
    argv += ["--max-shard-size", shard]
    log_path = run_dir / "deploy.log"
    with DiskSampler(work, cache, interval=0.05) as disk:
        seconds, peak_rss, code = run_measured(argv, env=env, cwd=run_dir, log=log_path)
    lines = log_path.read_text().splitlines()
    shutil.copyfile(log_path, run_dir.parent.parent / "last-deploy.log")  # kept beside the cache
    if code != 0:
        raise SystemExit("deploy failed:\n" + "\n".join(lines[-40:]))
    return Deploy(seconds, peak_rss, disk.peak, [x for x in lines if "shard " in x][-3:])


def peft_merge(base: Path, adapter: Path, out: Path, log: Path) -> tuple[float, int]:
    """peft's merge_and_unload + save_pretrained, as bench/merge.py's child runs it."""
    argv = [sys.executable, str(HERE / "merge.py"), "--child", "peft", str(base), str(adapter), str(out)]
    seconds, peak, code = run_measured(argv, env=dict(os.environ), cwd=HERE.parent, log=log)
    if code != 0:
        raise SystemExit("peft merge failed:\n" + log.read_text()[-4000:])
    return seconds, peak


def time_cp(base: Path, scratch: Path) -> float:
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(base), str(scratch / "copy")], check=True)
    seconds = time.perf_counter() - start
    shutil.rmtree(scratch / "copy")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="a ~1 GB model with the 7B model's structure")
    parser.add_argument(
        "--peft", action="store_true", help="also time peft's merge_and_unload + save_pretrained"
    )
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "deploygate-bench")
    args = parser.parse_args(argv)
    size = "small" if args.small else "full"
    shape = SMALL if args.small else LLAMA_7B
    from tests.hub_server import HubServer

    cache = args.cache / f"scale-{size}"
    base = build_base(cache / "base", shape, BASE_SHARD[size])
    model_bytes = sum(p.stat().st_size for p in base.glob("*.safetensors"))
    base_repo = f"dg-user/scale-base-{size}"
    adapter = build_adapter(cache / "adapter", shape, base_repo)
    print(
        f"model: {model_bytes / 1e9:.2f} GB in {len(list(base.glob('*.safetensors')))} shards; output shards {OUT_SHARD[size]}"
    )
    from huggingface_hub import HfApi, constants

    constants.HF_HUB_DISABLE_XET = True
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    target = f"dg-user/scale-{secrets.token_hex(4)}"
    with HubServer(lfs_dir=cache / "hub-lfs") as hub, tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        api = HfApi(endpoint=hub.url, token=hub.token)
        api.create_repo(base_repo)
        api.upload_folder(repo_id=base_repo, folder_path=str(base))  # objects kept on disk: uploaded once
        try:
            result = deploy(
                hub.url, hub.token, base_repo, target, adapter, Path(tmp) / "run", OUT_SHARD[size]
            )
        finally:
            shutil.rmtree(cache / "hub-lfs" / target.replace("/", "--"), ignore_errors=True)
        cp_seconds = time_cp(base, Path(tmp))
        peft = peft_merge(base, adapter, Path(tmp) / "peft", Path(tmp) / "peft.log") if args.peft else None
    report(model_bytes, result, cp_seconds, peft)
    return 0


def report(model_bytes: int, result: Deploy, cp_seconds: float, peft: tuple[float, int] | None) -> None:
    for line in result.log_tail:
        print("  " + line.strip())
    ratio = result.peak_disk / model_bytes
    print(f"peak disk:  {result.peak_disk / 1e9:.2f} GB = {ratio:.2f} x the model (goal <= {DISK_GOAL})")
    print(f"peak RSS:   {result.peak_rss / 1e9:.2f} GB (goal <= {RSS_GOAL / 1e9:.1f} GB)")
    print(
        f"deploy:     {result.seconds:.1f} s = {result.seconds / cp_seconds:.1f} x cp of the base ({cp_seconds:.1f} s)"
    )
    if peft is not None:
        wall, rss = peft
        print(
            f"peft merge: {wall:.1f} s, peak RSS {rss / 1e9:.2f} GB; deploy / peft = {result.seconds / wall:.2f} "
            f"(goal <= {TIME_GOAL})"
        )


if __name__ == "__main__":
    raise SystemExit(main())
