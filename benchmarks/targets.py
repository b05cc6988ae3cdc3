"""Targets: where a worker runs, and the limits the parent applies to it.

    native             this machine, one thread, pinned to one core
    pi4                Raspberry Pi 4 (1 GB): 4 threads, 1 GiB memory cap
    pi-zero-2w         Raspberry Pi Zero 2 W: 4 threads, 512 MiB memory cap
    emulated-aarch64   an arm64 Python under qemu user-mode emulation, one thread

A profile is applied with thread settings (the interpreter's own, plus the
OpenMP and BLAS variables), CPU pinning and a memory cap. The parent picks
the CPUs; the worker pins itself to them before it imports anything, so
every thread it starts inherits the mask (a preexec_fn would do the same
but is unsafe in a parent that runs threads, as one that has loaded torch
does). The profiles keep a board's thread count and memory, not its
speed: their latencies are this machine's, run under the board's limits.

The memory cap is on resident memory, which is what a board runs out of: a
watchdog reads the worker's VmRSS every few milliseconds and kills it past
the cap, and a worker whose own peak (VmHWM) passed the cap between two
readings is judged the same way. RLIMIT_AS is not used: it limits address
space, and interpreters reserve far more of it than they touch (thread
stacks, allocator arenas), so models that fit a board would fail under it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.worker import STATUS_ERROR, STATUS_NO_FIT, STATUS_OK

REPO_ROOT = Path(__file__).resolve().parent.parent
GIB, MIB = 1024**3, 1024**2
POLL_S = 0.005  # watchdog interval; a spike shorter than this is still caught by the worker's VmHWM
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")
STATUS_TIMEOUT = "timeout"


@dataclass(frozen=True)
class Target:
    name: str
    threads: int  # intra-op threads of the interpreter
    cores: int  # CPUs the worker is pinned to (fewer if this machine has fewer)
    memory_cap_bytes: int | None  # resident memory cap; None = none
    emulated: bool
    description: str


TARGETS = {
    t.name: t
    for t in (
        Target("native", 1, 1, None, False, "this machine, one thread, pinned to one core"),
        Target("pi4", 4, 4, 1 * GIB, False, "Raspberry Pi 4 (1 GB) profile: 4 threads, 1 GiB memory cap"),
        Target("pi-zero-2w", 4, 4, 512 * MIB, False, "Raspberry Pi Zero 2 W profile: 4 threads, 512 MiB cap"),
        Target("emulated-aarch64", 1, 1, None, True, "arm64 Python under qemu user-mode emulation (Cortex-A72)"),
    )
}


def target(name: str) -> Target:
    if name not in TARGETS:
        raise ValueError(f"unknown target {name!r}: use one of {', '.join(TARGETS)}")
    return TARGETS[name]


def pinned_cpus(cores: int) -> list[int] | None:
    """The CPUs to pin a worker to: the last `cores` this process may use (CPU 0 takes the most interrupts)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    available = sorted(os.sched_getaffinity(0))
    return available[-cores:]


@dataclass
class Launch:
    """How one worker ran: recorded with its figures."""

    status: str
    result: dict
    cpus: list[int] | None
    memory_cap_bytes: int | None
    watchdog_peak_rss_bytes: int
    wall_s: float
    returncode: int | None
    log: str  # the worker's stderr, last lines

    def settings(self) -> dict:
        data = asdict(self)
        for name in ("result", "log", "status"):
            data.pop(name)
        return data


def worker_environment(t: Target, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(t.threads)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def run_worker(
    spec: dict, t: Target, workdir: Path, timeout_s: float, command: list[str] | None = None, env=None
) -> Launch:
    """Start one worker for `spec` under target `t`, watch it, and read its result.

    `command` replaces `python -m benchmarks.worker` (the emulator's prefix);
    SPEC and RESULT paths are appended to it.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path, log_path = workdir / "spec.json", workdir / "result.json", workdir / "worker.log"
    result_path.unlink(missing_ok=True)
    cpus = pinned_cpus(t.cores)
    spec_path.write_text(json.dumps({**spec, "cpus": cpus}))
    argv = [*(command or [sys.executable, "-m", "benchmarks.worker"]), str(spec_path), str(result_path)]

    start = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv,
            env=env or worker_environment(t),
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        peak, killed_for = _watch(proc, t.memory_cap_bytes, timeout_s)
    wall_s = time.monotonic() - start

    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    status = result.get("status", STATUS_ERROR)
    if killed_for:
        status = killed_for
    elif not result and proc.returncode == -signal.SIGKILL:
        status = STATUS_NO_FIT  # killed from outside with no result: the kernel's out-of-memory killer
    elif t.memory_cap_bytes and status == STATUS_OK and result.get("peak_rss_bytes", 0) > t.memory_cap_bytes:
        status = STATUS_NO_FIT  # over the cap between two watchdog readings
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
    if status != STATUS_OK and "error" not in result:
        result["error"] = _describe(status, proc.returncode, t, tail)
    return Launch(status, result, cpus, t.memory_cap_bytes, peak, round(wall_s, 2), proc.returncode, tail)


def _watch(proc: subprocess.Popen, cap: int | None, timeout_s: float) -> tuple[int, str | None]:
    """Poll the worker's resident memory until it exits; kill it past the cap or the time limit."""
    peak, deadline = 0, time.monotonic() + timeout_s
    while proc.poll() is None:
        rss = _rss_bytes(proc.pid)
        peak = max(peak, rss)
        if cap is not None and rss > cap:
            proc.kill()
            proc.wait()
            return peak, STATUS_NO_FIT
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            return peak, STATUS_TIMEOUT
        time.sleep(POLL_S)
    return peak, None


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _describe(status: str, returncode: int | None, t: Target, log_tail: str) -> str:
    if status == STATUS_NO_FIT:
        return f"does not fit in {t.memory_cap_bytes / MIB:.0f} MiB" if t.memory_cap_bytes else "out of memory"
    if status == STATUS_TIMEOUT:
        return "ran past the time limit"
    last = log_tail.strip().splitlines()[-1] if log_tail.strip() else "no output"
    return f"worker exited with status {returncode}: {last}"
