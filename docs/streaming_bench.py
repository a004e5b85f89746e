"""The streaming benchmark of docs/data.md: a generated corpus of JSONL shards (tiny-shakespeare paragraphs, each
shard's in its own seeded order) trains a scratch GPT-2 causal LM, packed, through `ptrain train`:
1. streamed from the big corpus (default 5 GB), 2. streamed from the small one (default 50 MB), 3. map-style from the
small one. Per run: seconds from the process start to the first optimizer step, peak RSS of the process, and real
tokens/s over the last steps. Usage: python docs/streaming_bench.py OUT_DIR [--gigabytes 5] [--small-megabytes 50]"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO.parent / "shared" / "data" / "tiny_shakespeare" / "input.txt"
CONFIG = """task: causal_lm
name: {name}
output_dir: {out}/runs
data:
  train_file: {train}
  validation_file: {out}/validation.jsonl
  streaming: {streaming}
  shuffle_buffer_size: 1000
  group_by_length: false
  cache_dir: {out}/cache
model:
  tokenizer: {out}/tokenizer
  scratch_config: {{model_type: gpt2, n_positions: 128, n_embd: 192, n_layer: 4, n_head: 4}}
causal_lm:
  packing: true
  block_size: 128
train:
  max_steps: {steps}
  per_device_batch_size: 16
  learning_rate: 1.0e-3
  log_every_steps: 1
  eval_every_steps: 100000
  checkpoint_at_epoch_end: false
"""


def write_corpus(folder: Path, total_bytes: int, shards: int, paragraphs: list[str], seed: int) -> None:
    """`shards` JSONL files of {"text": paragraph} lines, together at least total_bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    per_shard, rng = total_bytes // shards + 1, random.Random(seed)
    lines = [json.dumps({"text": paragraph}) + "\n" for paragraph in paragraphs]
    for shard in range(shards):
        written, order = 0, list(range(len(lines)))
        with open(folder / f"part-{shard:05d}.jsonl", "w") as handle:
            while written < per_shard:
                rng.shuffle(order)
                chunk = "".join(lines[i] for i in order)
                handle.write(chunk)
                written += len(chunk)


def measure(name: str, out: Path, train: str, streaming: bool, steps: int) -> dict:
    config = out / f"{name}.yaml"
    config.write_text(CONFIG.format(name=name, out=out, train=train, streaming=str(streaming).lower(), steps=steps))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "ptrain", "train", str(config)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    first_step, output, peak = None, [], 0

    def read() -> None:
        nonlocal first_step
        for raw in iter(lambda: process.stdout.read1(65536), b""):
            output.append(raw.decode(errors="replace"))
            if first_step is None and re.search(r"step 1/\d+ \|", "".join(output[-3:])):
                first_step = time.perf_counter() - started

    reader = threading.Thread(target=read)
    reader.start()
    handle = psutil.Process(process.pid)
    while process.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [handle, *handle.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.05)
    reader.join()
    text = "".join(output)
    if process.returncode != 0:
        raise SystemExit(f"{name} failed:\n{text[-3000:]}")
    rates = [float(rate.replace(",", "")) for rate in re.findall(r"\| ([\d,]+) tok/s \|", text)]
    return {
        "run": name,
        "seconds_to_first_step": first_step,
        "peak_rss_gib": peak / 2**30,
        "tokens_per_second": statistics.median(rates[len(rates) // 3 :]),  # after the first third's warm-up
        "wall_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--gigabytes", type=float, default=5.0)
    parser.add_argument("--small-megabytes", type=float, default=50.0)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    out = args.out.resolve()
    paragraphs = [p.strip() for p in SHAKESPEARE.read_text().split("\n\n") if p.strip()]
    validation, paragraphs = paragraphs[-200:], paragraphs[:-200]
    out.mkdir(parents=True, exist_ok=True)
    (out / "validation.jsonl").write_text("".join(json.dumps({"text": p}) + "\n" for p in validation))
    if not (out / "tokenizer").is_dir():  # a byte-level BPE (it has the EOS a causal LM needs), as ptrain trains one
        from ptrain.model.tokenizer_training import train_bpe

        train_bpe(paragraphs, vocab_size=4000, min_frequency=2).save_pretrained(out / "tokenizer")
    for folder, size, shards in (
        ("big", args.gigabytes * 2**30, args.shards),
        ("small", args.small_megabytes * 2**20, 1),
    ):
        if not (out / folder).is_dir():
            started = time.perf_counter()
            write_corpus(out / folder, int(size), shards, paragraphs, seed=len(folder))
            print(
                f"{folder}: {sum(f.stat().st_size for f in (out / folder).iterdir()) / 2**30:.2f} GiB written in "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    results = [
        measure("stream_big", out, f"{out}/big/part-*.jsonl", True, args.steps),
        measure("stream_small", out, f"{out}/small/part-00000.jsonl", True, args.steps),
        measure("map_small", out, f"{out}/small/part-00000.jsonl", False, args.steps),
    ]
    for row in results:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
