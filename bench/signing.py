"""Benchmark: signing a TinyLlama-shaped Hub folder against `sha256sum` of the same files.

Signing is hashing every file (SHA-256 of the whole file, what model-signing's "files" serialization
signs) plus one ECDSA signature over the manifest; `sha256sum` hashing the same files is the floor.
The folder is built once (random bytes: TinyLlama-1.1B's bf16 tensor sizes in two shards, ~2.2 GB,
plus config, tokenizer and card) and cached under the temporary folder, so later runs start at once.
Each method runs --repeat times, alternating, after one warm-up read of every file (the page
cache then holds the folder for both); the table shows the fastest run of each (load on a shared
machine only ever adds time). Also shown, not goals: model-signing hashing the folder itself, and
`openssl dgst -sha256` (OpenSSL's SHA-256, the one Python's hashlib uses: coreutils' sha256sum may
not use the CPU's SHA instructions, OpenSSL does).

    .venv/bin/python bench/signing.py             # full size (~2.2 GB; builds it the first time)
    .venv/bin/python bench/signing.py --small     # ~50 MB, a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.merge import SMALL, TINYLLAMA, llama_shapes

TIME_TARGET = 1.5  # signing takes at most 1.5x sha256sum's time


def model_bytes(shape: dict[str, int]) -> int:
    total = 0
    for dims in llama_shapes(shape).values():
        n = 1
        for d in dims:
            n *= d
        total += 2 * n  # bf16
    return total


def build(root: Path, shape: dict[str, int]) -> Path:
    """The Hub folder: two weight shards of random bytes and the small files; kept for the next run."""
    folder = root / "model"
    done = root / "complete"
    if done.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    total = model_bytes(shape)
    halves = (total // 2, total - total // 2)
    for i, size in enumerate(halves, 1):
        with (folder / f"model-0000{i}-of-00002.safetensors").open("wb") as out:
            left = size
            while left:
                chunk = min(left, 64 << 20)
                out.write(os.urandom(chunk))
                left -= chunk
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", **shape}, indent=2))
    (folder / "tokenizer.json").write_bytes(os.urandom(1_800_000))
    (folder / "tokenizer_config.json").write_text('{"model_max_length": 2048}\n')
    (folder / "README.md").write_text("# a TinyLlama-shaped model\n")
    (folder / "deploygate-verdict.json").write_text('{"kind": "deploygate/verdict"}\n')
    done.write_text(str(total))
    return folder


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != "model.sig")


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def methods_for(
    folder: Path, files: list[Path], pem: bytes, signatures: list[bytes]
) -> dict[str, Callable[[], object]]:
    """What is timed: the reference (sha256sum), deploygate's signing, and the two shown for context."""
    from deploygate.adapters.model_signer import KeySigner, sign_folder

    signer = KeySigner(pem)

    def deploygate_sign() -> None:
        signatures.append(sign_folder(folder, signer))

    def model_signing_sign() -> None:
        import model_signing

        with tempfile.TemporaryDirectory() as tmp:
            key_path = Path(tmp) / "key.pem"
            key_path.write_bytes(pem)
            model_signing.signing.Config().use_elliptic_key_signer(private_key=key_path).sign(
                folder, Path(tmp) / "model.sig"
            )

    def command(*argv: str) -> Callable[[], object]:
        return lambda: subprocess.run([*argv, *map(str, files)], check=True, stdout=subprocess.DEVNULL)

    methods = {
        "sha256sum": command("sha256sum"),
        "deploygate sign": deploygate_sign,
        "model_signing sign": model_signing_sign,
    }
    if shutil.which("openssl"):  # the same SHA-256 implementation Python's hashlib uses
        methods["openssl dgst -sha256"] = command("openssl", "dgst", "-sha256")
    return methods


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="a ~50 MB model instead of ~2.2 GB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "deploygate-bench-signing"
    )
    args = parser.parse_args(argv)
    from deploygate.adapters.model_signer import KeyVerifier

    t0 = time.perf_counter()
    folder = build(args.cache / ("small" if args.small else "tinyllama"), SMALL if args.small else TINYLLAMA)
    files = files_of(folder)
    size = sum(p.stat().st_size for p in files)
    print(
        f"folder: {folder} ({len(files)} files, {size / 1e9:.2f} GB; ready in {time.perf_counter() - t0:.1f} s)"
    )

    from tests.keys import ec_pem

    pem, public = ec_pem()
    signatures: list[bytes] = []
    methods = methods_for(folder, files, pem, signatures)
    methods["sha256sum"]()  # warm-up: the page cache holds the folder for every method alike
    imported = timed(lambda: __import__("model_signing._signing.sign_ec_key"))  # once per process
    print(f"importing model_signing: {imported:.2f} s (once per process, not in the times below)")
    best: dict[str, float] = {}
    for i in range(args.repeat):
        for name in list(methods) if i % 2 == 0 else list(reversed(methods)):
            best[name] = min(best.get(name, float("inf")), timed(methods[name]))
    assert len(KeyVerifier(public).signed_digests(signatures[-1])) == len(files)  # the signature is real

    print(f"\nbest of {args.repeat} runs each, {size / 1e9:.2f} GB:")
    print("| method | time | GB/s | vs sha256sum |\n|---|---:|---:|---:|")
    for name, seconds in best.items():
        print(
            f"| {name} | {seconds:.2f} s | {size / 1e9 / seconds:.2f} | {seconds / best['sha256sum']:.2f}x |"
        )
    ratio = best["deploygate sign"] / best["sha256sum"]
    print(
        f"\nsigning / sha256sum = {ratio:.2f} (goal <= {TIME_TARGET}: {'met' if ratio <= TIME_TARGET else 'NOT met'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
