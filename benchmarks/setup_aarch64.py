"""Set up the emulated-aarch64 target: an arm64 Python with arm64 wheels, run by qemu user-mode emulation.

    python -m benchmarks.setup_aarch64            # into .cache/aarch64 (about 450 MB, a minute)
    python -m benchmarks.setup_aarch64 --check    # only say whether it is set up

Everything comes from Debian and Python packages; nothing is installed on
the host system and no chroot is entered:

1. qemu-user-static and debootstrap: `apt-get download`, unpacked with `dpkg -x`.
2. A minimal arm64 Debian with python3.11: debootstrap's first stage
   (`--foreign`, which downloads and unpacks but runs nothing), then the
   packages it leaves packed unpacked by hand. Needs root, as debootstrap does.
3. An ARM /proc/cpuinfo inside that sysroot. qemu's `-L` prefers files
   under the sysroot, and onnxruntime reads /proc/cpuinfo at import: under
   qemu 7.2 it sees the host's x86 one and crashes (SIGSEGV) without this.
4. numpy, onnxruntime, ai-edge-litert and tokenizers as manylinux aarch64
   wheels, `pip install --target` for an aarch64 platform: unpacked, not
   run. Versions match this Python's where it has them, so native and
   emulated runs use the same interpreter release.

The emulated CPU is a Cortex-A72 (a Raspberry Pi 4's), so the interpreters
pick the kernels such a core has (no dot-product or fp16 instructions).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from training.errors import UserError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO_ROOT / ".cache" / "aarch64"
DIR_ENV = "EDGECOMPLETE_AARCH64_DIR"
MIRROR_ENV = "EDGECOMPLETE_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
SUITE = "bookworm"  # Debian 12: python3.11 and glibc 2.36, as Raspberry Pi OS 12
PYTHON = "python3.11"
CPU = "cortex-a72"
WHEELS = ("numpy", "onnxruntime", "ai-edge-litert", "tokenizers")
# pip does not widen a manylinux platform to older ones, so every tag the wheels use is listed.
PLATFORMS = ("manylinux2014_aarch64", *(f"manylinux_2_{minor}_aarch64" for minor in (24, 26, 27, 28, 31, 34, 35, 36)))
READY_FILE = "ready.json"

# A Cortex-A72, as a Raspberry Pi 4's kernel lists it.
CPUINFO_CORE = (
    "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
)


@dataclass(frozen=True)
class Emulator:
    qemu: Path
    sysroot: Path
    site: Path  # the unpacked arm64 wheels
    versions: dict

    def python(self) -> list[str]:
        """The command that runs the arm64 Python; append its arguments."""
        return [str(self.qemu), "-L", str(self.sysroot), "-cpu", CPU, str(self.sysroot / "usr" / "bin" / PYTHON)]

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        env["PYTHONPATH"] = os.pathsep.join([str(self.site), str(REPO_ROOT)])
        env["PYTHONNOUSERSITE"] = "1"
        # Host tuning for x86 OpenBLAS would misdirect the arm64 build.
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "PYTHONHOME", "VIRTUAL_ENV"):
            env.pop(name, None)
        return env


def cache_dir(override: str | Path | None = None) -> Path:
    return Path(override or os.environ.get(DIR_ENV) or DEFAULT_DIR)


def find_emulator(folder: str | Path | None = None) -> Emulator:
    """The set-up emulator, or a UserError that says how to set it up."""
    folder = cache_dir(folder)
    ready = folder / READY_FILE
    if not ready.is_file():
        raise UserError(
            f"the emulated-aarch64 target is not set up in {folder}: run `python -m benchmarks.setup_aarch64` (as root)"
        )
    data = json.loads(ready.read_text())
    return Emulator(Path(data["qemu"]), Path(data["sysroot"]), Path(data["site"]), data["versions"])


def setup(folder: str | Path | None = None, mirror: str | None = None) -> Emulator:
    folder = cache_dir(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / READY_FILE).unlink(missing_ok=True)
    qemu = _qemu(folder)
    sysroot = _sysroot(folder, mirror or os.environ.get(MIRROR_ENV, DEFAULT_MIRROR))
    (sysroot / "proc").mkdir(exist_ok=True)
    (sysroot / "proc" / "cpuinfo").write_text("".join(CPUINFO_CORE.format(n=n) for n in range(4)))
    site, versions = _wheels(folder)
    emulator = Emulator(qemu, sysroot, site, versions)
    _smoke_test(emulator)
    data = {"qemu": str(qemu), "sysroot": str(sysroot), "site": str(site), "versions": versions}
    (folder / READY_FILE).write_text(json.dumps(data, indent=2) + "\n")
    return emulator


def _run(argv: list[str], what: str, cwd: Path | None = None, env=None) -> str:
    _progress(f"{what}: {' '.join(argv[:3])} ...")
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise UserError(f"{what} failed (exit status {done.returncode}):\n{tail}")
    return done.stdout


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _qemu(folder: Path) -> Path:
    """qemu-aarch64 from the qemu-user-static package, unpacked into folder/tools."""
    tools = folder / "tools"
    for name in ("qemu-aarch64-static", "qemu-aarch64"):
        if (tools / "usr" / "bin" / name).is_file():
            return tools / "usr" / "bin" / name
    _download_and_unpack(["qemu-user-static"], folder / "debs", tools)
    found = None
    for path in sorted((tools / "usr" / "bin").glob("qemu-*")):
        if path.name in ("qemu-aarch64-static", "qemu-aarch64"):
            found = found or path
        else:
            path.unlink()  # the package emulates some thirty architectures; one is needed
    if found is None:
        raise UserError(f"the qemu-user-static package unpacked into {tools} holds no qemu-aarch64")
    return found


def _download_and_unpack(packages: list[str], debs: Path, into: Path) -> None:
    if not shutil.which("apt-get") or not shutil.which("dpkg"):
        raise UserError("apt-get and dpkg are needed to fetch qemu and debootstrap: run on Debian or Ubuntu")
    debs.mkdir(parents=True, exist_ok=True)
    _run(["apt-get", "download", *packages], f"downloading {', '.join(packages)}", cwd=debs)
    for package in packages:
        for deb in sorted(debs.glob(f"{package}_*.deb")):
            _run(["dpkg", "-x", str(deb), str(into)], f"unpacking {deb.name}")
            deb.unlink()


def _sysroot(folder: Path, mirror: str) -> Path:
    """A minimal arm64 Debian with python3.11, from debootstrap's first stage."""
    sysroot = folder / "sysroot"
    if (sysroot / "usr" / "bin" / PYTHON).is_file():
        return sysroot
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise UserError("debootstrap needs root to build the arm64 sysroot: run this setup as root (or under fakeroot)")
    tools = folder / "tools"
    _download_and_unpack(["debootstrap"], folder / "debs", tools)
    shutil.rmtree(sysroot, ignore_errors=True)
    env = dict(os.environ, DEBOOTSTRAP_DIR=str(tools / "usr" / "share" / "debootstrap"))
    argv = [str(tools / "usr" / "sbin" / "debootstrap"), "--foreign", "--arch=arm64", "--variant=minbase"]
    argv.append(f"--include={PYTHON}-minimal,lib{PYTHON}-stdlib")
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    if keyring.is_file():
        argv.append(f"--keyring={keyring}")
    else:
        argv.append("--no-check-gpg")  # not on Debian: the mirror is trusted as given
    _run([*argv, SUITE, str(sysroot), mirror], "debootstrap (first stage, arm64)", env=env)

    # The first stage unpacks only the essential packages; python3.11 and its
    # libraries stay packed in the archive cache until the second stage, which
    # would need a chroot. Unpacking every cached package by hand is enough.
    archives = sysroot / "var" / "cache" / "apt" / "archives"
    for deb in sorted(archives.glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(sysroot)], f"unpacking {deb.name}")
        deb.unlink()
    if not (sysroot / "usr" / "bin" / PYTHON).is_file():
        raise UserError(f"debootstrap finished but {sysroot}/usr/bin/{PYTHON} is missing")
    return sysroot


def _wheels(folder: Path) -> tuple[Path, dict]:
    site = folder / "site"
    pins = []
    for name in WHEELS:
        try:
            pins.append(f"{name}=={importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(name)
    shutil.rmtree(site, ignore_errors=True)
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--no-cache-dir", "--target", str(site)]
    argv += ["--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    argv += [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    _run([*argv, *pins], "pip: arm64 wheels")
    versions = {}
    for info in site.glob("*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        versions[name.lower().replace("_", "-")] = version
    return site, {name: versions.get(name, "missing") for name in WHEELS}


def _smoke_test(emulator: Emulator) -> None:
    code = "import numpy, onnxruntime, ai_edge_litert.interpreter, tokenizers, platform; print(platform.machine())"
    machine = _run(
        [*emulator.python(), "-c", code], "importing the wheels under qemu", env=emulator.environment(os.environ)
    )
    if machine.strip() != "aarch64":
        raise UserError(f"the emulated Python reports machine {machine.strip()!r}, expected aarch64")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", help=f"where to put it (default: ${DIR_ENV} or .cache/aarch64)")
    parser.add_argument("--mirror", help=f"Debian mirror (default: ${MIRROR_ENV} or {DEFAULT_MIRROR})")
    parser.add_argument("--check", action="store_true", help="only report whether the target is set up")
    args = parser.parse_args(argv)
    try:
        emulator = find_emulator(args.cache_dir) if args.check else setup(args.cache_dir, args.mirror)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"qemu": str(emulator.qemu), "sysroot": str(emulator.sysroot), **emulator.versions}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
