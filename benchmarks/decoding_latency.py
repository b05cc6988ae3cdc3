"""What a completion costs under each decoding: greedy, beam search and minimum-Bayes-risk, side by side.

Beam search runs up to `width` steps per word and MBR one step per distinct
sampled prefix (at most samples x words); this measures what that means in
milliseconds on one device file. Each round completes every prompt once
with every decoding, the decodings taking turns, so a noisy neighbour slows
them alike; warm-up rounds are discarded.

    python -m benchmarks.decoding_latency artifacts/default --file model.int8.tflite --rounds 20

Prints p50/p90 per decoding and each p50 over greedy's; writes the figures
and settings to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np


def decodings(beam_width: int, mbr) -> dict[str, dict]:
    return {"greedy": {}, f"beam {beam_width}": {"beam_width": beam_width},
            f"MBR {mbr.samples} samples": {"mbr": mbr}}  # fmt: skip


def measure(model, prompts: list[dict], options: dict[str, dict], rounds: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds of each complete() call, per decoding, after `warmup` discarded rounds."""
    times: dict[str, list[float]] = {name: [] for name in options}
    for round_ in range(warmup + rounds):
        for prompt in prompts:
            text = " ".join(prompt["prefix"]) + " "
            for name, kwargs in options.items():
                start = time.perf_counter()
                model.complete(text, n_words=prompt["m"], stop_at_end=False, **kwargs)
                elapsed = (time.perf_counter() - start) * 1e3
                if round_ >= warmup:
                    times[name].append(elapsed)
    return times


def main(argv: list[str] | None = None) -> int:
    import edge_runtime
    from benchmarks.prompts import typical_prompts
    from training.corpus import data_root

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--file", dest="model_file", default="model.int8.tflite")
    parser.add_argument("--data", default=str(data_root() / "sentiment140" / "tweets.txt"))
    parser.add_argument("--prompts", type=int, default=20, help="test texts of median length")
    parser.add_argument("--rounds", type=int, default=20, help="timed passes over the prompts")
    parser.add_argument("--warmup", type=int, default=2, help="passes run first and discarded")
    parser.add_argument("--beam-width", type=int, default=8)
    parser.add_argument("--mbr-samples", type=int, default=edge_runtime.MBR.samples)
    parser.add_argument("--out", default="out/decoding_latency.json")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.warmup < 0 or args.prompts < 1:
        parser.error("--rounds and --prompts must be at least 1, --warmup at least 0")
    try:
        model = edge_runtime.load(args.bundle, args.model_file)
        mbr = edge_runtime.MBR(samples=args.mbr_samples)
        prompts, note = typical_prompts(args.data, args.prompts)
        options = decodings(args.beam_width, mbr)
        times = measure(model, prompts, options, args.rounds, args.warmup)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    greedy = float(np.percentile(times["greedy"], 50))
    figures = {}
    print(f"{model}; {note['count']} prompts of {note['words']} words, {args.rounds} rounds")
    print(f"{'decoding':<16} {'p50 ms':>9} {'p90 ms':>9} {'p50 / greedy':>13}")
    for name, values in times.items():
        p50, p90 = (float(np.percentile(values, q)) for q in (50, 90))
        figures[name] = {"p50_ms": p50, "p90_ms": p90, "calls": len(values), "p50_over_greedy": p50 / greedy}
        print(f"{name:<16} {p50:>9.2f} {p90:>9.2f} {p50 / greedy:>12.1f}x")
    report = {"bundle": args.bundle, "file": args.model_file, "backend": model.backend_name, "prompts": note,
              "rounds": args.rounds, "warmup": args.warmup, "beam_width": args.beam_width, "mbr": asdict(mbr),
              "machine": platform.machine(), "decodings": figures}  # fmt: skip
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
