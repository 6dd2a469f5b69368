"""The instruments: fio, the C programs in bench/c, and memory probes.

Every child gets a timeout, so that a hung daemon costs one figure, not the
whole run.
"""

import hashlib
import json
import os
import pathlib
import subprocess

MiB = 1 << 20
TIMEOUT = 900
C_DIR = pathlib.Path(__file__).with_name("c")


def cache_dir():
    """Where compiled programs and the built peer live between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    path = pathlib.Path(base, "holefs-bench")
    path.mkdir(parents=True, exist_ok=True)
    return path


def run(cmd, timeout=TIMEOUT, cwd=None):
    """Run *cmd*; a failure or a hang raises RuntimeError with the reason in it."""
    name = pathlib.Path(str(cmd[0])).name
    try:
        result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                                timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{name} {cmd[1]}: no answer in {timeout} s") from None
    if result.returncode:
        said = (result.stderr or result.stdout).strip().splitlines() or ["failed"]
        raise RuntimeError(f"{name}: {said[-1]}")
    return result.stdout


def program(name):
    """The compiled bench/c/NAME.c, rebuilt only when a source changed."""
    sources = [C_DIR / f"{name}.c", C_DIR / "common.h"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    binary = cache_dir() / f"{name}-{digest}"
    if not binary.exists():
        partial = binary.with_suffix(".tmp")
        run(["gcc", "-O2", "-Wall", "-o", partial, sources[0]])
        partial.rename(binary)
    return binary


def run_program(name, *args):
    """Run a bench program and parse its "key=value ..." line into floats."""
    out = run([program(name), *args])
    return {k: float(v) for k, v in (field.split("=") for field in out.split())}


def fio(path, rw, bs, size_mib, jobs=1, end_fsync=False):
    """One fio run over *size_mib* of *path*; returns fio's read or write summary.

    The jobs split the file between them and, with fio's random map, touch
    each block once: a fixed amount of work, and random reads that all miss
    a dropped cache.  invalidate=0 leaves the page cache alone, so the
    caller decides what is cold (drop_caches) and what is warm;
    fallocate=none lays files out alike on every filesystem.
    """
    share = size_mib // jobs
    cmd = ["fio", "--name=bench", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
           f"--size={share}M", f"--offset_increment={share}M", f"--numjobs={jobs}",
           "--ioengine=psync", "--invalidate=0", "--fallocate=none", "--randrepeat=0",
           "--group_reporting", "--output-format=json"]
    if end_fsync:
        cmd.append("--end_fsync=1")
    out = run(cmd)
    job = json.loads(out[out.index("{"):])["jobs"][0]
    return job["write" if "write" in rw else "read"]


def fill(path, size):
    """Write *size* bytes of non-zero data, as a program would leave a file."""
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)


def drop_caches():
    """Drop clean page cache, FUSE's included; tmpfs keeps its pages."""
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("1")


def rss(pid):
    """A daemon's resident memory, from smaps_rollup."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Rss:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Rss in /proc/{pid}/smaps_rollup")


def kernel_slab():
    """Bytes in the kernel's slab caches, where tmpfs keeps inodes and dentries."""
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Slab:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Slab in /proc/meminfo")
