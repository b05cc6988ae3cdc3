"""Benchmarks: measure bundles and baselines on targets and write reports.

`edgecomplete bench` runs `benchmarks.bench.run_bench`: for every (model,
target) pair it starts one worker process (`benchmarks.worker`), applies the
target's threads, CPU pinning and memory cap to it, and collects the figures
the worker writes back. `benchmarks.report` turns them into bench.json,
bench.md and PNG charts.

This package's __init__ imports nothing: the worker runs under an emulated
arm64 Python that has numpy and one interpreter and nothing else.
"""
