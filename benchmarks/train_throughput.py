"""Training throughput (tokens/s) of the LSTM on this machine, fp32 vs bf16.

Trains the default architecture on real tweets for a fixed number of steps
per variant, interleaving the variants round by round so that a noisy
neighbour slows them alike; the first steps of every round are warm-up and
not timed. Prints a table and writes JSON.

    python -m benchmarks.train_throughput --steps 30 --rounds 3 --out throughput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def measure(config, train_seqs, pad_id, steps: int, warmup: int, seed: int) -> list[float]:
    """Tokens/s of each timed step of one fresh model."""
    import torch

    from training.models import build_model
    from training.trainer import batch_loss, epoch_batches, pad_batch

    torch.manual_seed(seed)
    model = build_model(config.model).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr)
    batches = epoch_batches(train_seqs, config.batch_size, seed, 0)
    rates = []
    for step in range(warmup + steps):
        inputs, targets = pad_batch([train_seqs[i] for i in batches[step]], pad_id)
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            loss, n_tokens = batch_loss(model, inputs, targets, pad_id)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= warmup:
            rates.append(n_tokens / (time.perf_counter() - start))
    return rates


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/lstm256.json")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import torch

    from training.config import load_config
    from training.trainer import prepare_data

    torch.set_num_threads(args.threads)
    base = load_config(args.config)
    vocab, train_seqs, _, stats = prepare_data(base)
    results: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for round_index in range(args.rounds):
        for name in results:
            base.bf16 = name == "bf16"
            results[name] += measure(base, train_seqs, vocab.pad_id, args.steps, args.warmup, seed=round_index)

    record = {
        "model": base.model.__dict__,
        "batch_size": base.batch_size,
        "threads": args.threads,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
        "steps_timed": args.steps * args.rounds,
        "tokens_per_s": {
            name: {f"p{q}": float(np.percentile(r, q)) for q in (10, 50, 90)} for name, r in results.items()
        },
    }
    record["bf16_speedup_p50"] = record["tokens_per_s"]["bf16"]["p50"] / record["tokens_per_s"]["fp32"]["p50"]
    print(f"{'variant':8} {'p10 tok/s':>10} {'p50 tok/s':>10} {'p90 tok/s':>10}")
    for name, q in record["tokens_per_s"].items():
        print(f"{name:8} {q['p10']:10.0f} {q['p50']:10.0f} {q['p90']:10.0f}")
    print(f"bf16 / fp32 at p50: {record['bf16_speedup_p50']:.2f}x")
    if args.out:
        args.out.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
