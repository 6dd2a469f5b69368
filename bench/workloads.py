"""The workloads: each runs on one mounted filesystem and returns its figures.

A workload's figures are named by its metrics; the same function runs on
holefs, on tmpfs and, where it can, on libfuse's passthrough_hp, so the
figures differ only by the filesystem underneath.
"""

import dataclasses
import sqlite3
import time

from .tools import MiB, drop_caches, fill, fio, kernel_slab, rss, run_program

PEER_PUNCH = ("passthrough_hp cannot punch holes: its fallocate answers EOPNOTSUPP "
              "to every mode but plain allocation")


@dataclasses.dataclass(frozen=True)
class Scale:
    """How much work one figure is; --quick shrinks it to a smoke test."""
    file_mib: int = 256
    files: int = 10_000
    map_mib: int = 64
    punches: int = 20_000
    spill_ram_mib: int = 64
    empty_files: int = 100_000
    rows: int = 50_000


QUICK = Scale(file_mib=32, files=1_000, map_mib=16, punches=2_000,
              spill_ram_mib=16, empty_files=10_000, rows=5_000)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One row of the table.  Ratios are speed ratios: above 1, holefs is faster."""
    label: str
    unit: str
    target: float = None          # least acceptable holefs/tmpfs speed ratio
    lower_is_better: bool = False  # a time or a size, not a rate
    ceiling: float = None         # most acceptable holefs figure, for absolute targets


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    metrics: tuple
    run: object                   # (Fs, Scale) -> {metric label: figure}
    spill: bool = False           # holefs must mount with a small RAM budget
    peer_note: str = None         # why passthrough_hp cannot run it; None if it can


def mb_per_s(summary):
    return summary["bw_bytes"] / 1e6


def seq_write(fs, scale):
    """Streaming 1 MiB writes and the fsync that makes them count."""
    return {"seq write 1M+fsync": mb_per_s(
        fio(fs.path / "seq", "write", "1M", scale.file_mib, end_fsync=True))}


def seq_read(fs, scale):
    """Cold: every page comes from the filesystem; warm: from the page cache."""
    path = fs.path / "seq"
    fill(path, scale.file_mib * MiB)
    drop_caches()
    cold = fio(path, "read", "1M", scale.file_mib)
    warm = fio(path, "read", "1M", scale.file_mib)
    return {"seq read 1M cold": mb_per_s(cold), "seq read 1M warm": mb_per_s(warm)}


def random_io(rw):
    """4 KiB random I/O over the whole file by one and two jobs, from a cold cache."""
    def run(fs, scale):
        path = fs.path / "rand"
        fill(path, scale.file_mib * MiB)
        figures = {}
        for jobs in (1, 2):
            drop_caches()
            summary = fio(path, rw, "4k", scale.file_mib, jobs=jobs)
            figures[f"{rw} 4k {jobs}j"] = summary["iops"]
        return figures
    return run


def files(fs, scale):
    """Create, stat, listing and unlink of many empty files: the namespace
    round trips.  A listing's figure is entries per second."""
    where = fs.path / "files"
    where.mkdir()
    seconds = run_program("files", where, scale.files)
    return {f"file {phase}": scale.files / seconds[phase]
            for phase in ("create", "stat", "list", "unlink")}


def sqlite_inserts(fs, scale, batch=1_000):
    """A database's small transactions: rows inserted in batches, each
    committed durably (WAL, synchronous=FULL), so each is a few small
    writes and an fsync."""
    db = sqlite3.connect(fs.path / "bench.db", isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, payload TEXT)")
        started = time.perf_counter()
        for first in range(0, scale.rows, batch):
            db.execute("BEGIN")
            db.executemany("INSERT INTO t (payload) VALUES (?)",
                           ((f"row {i:08d} " * 4,) for i in range(first, first + batch)))
            db.execute("COMMIT")
        seconds = time.perf_counter() - started
    finally:
        db.close()
    return {"sqlite inserts, batches of 1k": seconds}


def mmap_dirty(fs, scale):
    """Another process dirties every page of a shared mapping, then msyncs."""
    path = fs.path / "map"
    fill(path, scale.map_mib * MiB)
    result = run_program("mmap_dirty", path)
    return {"mmap dirty+msync": result["bytes"] / result["seconds"] / 1e6}


def punch(fs, scale):
    """Single-page hole punches at random offsets, as an allocator frees pages."""
    path = fs.path / "punch"
    fill(path, scale.map_mib * MiB)
    seconds = run_program("punch", path, scale.punches)["seconds"]
    return {"punch 4k random": scale.punches / seconds}


def madvise_remove(fs, scale):
    """One MADV_REMOVE over a mapped section, clean and dirty."""
    path = fs.path / "madv"
    figures = {}
    for state in ("clean", "dirty"):
        fill(path, scale.map_mib * MiB)
        seconds = run_program("madv_remove", path, state)["seconds"]
        figures[f"MADV_REMOVE {state}"] = seconds * 1000
    return figures


def spill(fs, scale):
    """Four times the RAM budget through holefs's spill file, written then read back cold."""
    path = fs.path / "spill"
    size_mib = 4 * scale.spill_ram_mib
    write = fio(path, "write", "1M", size_mib, end_fsync=True)
    drop_caches()
    read = fio(path, "read", "1M", size_mib)
    return {"spill write 4xRAM": mb_per_s(write), "spill read 4xRAM": mb_per_s(read)}


def memory_in_use(fs):
    """A FUSE daemon's RSS, plus the kernel slab where a tmpfs keeps the inodes
    of files that live in one (tmpfs itself, and passthrough_hp's underneath)."""
    return (rss(fs.pid) if fs.pid else 0) + (kernel_slab() if fs.on_tmpfs else 0)


def memory(fs, scale):
    """What an empty file costs: memory growth over many creates, per file."""
    where = fs.path / "empty"
    where.mkdir()
    before = memory_in_use(fs)
    run_program("files", where, scale.empty_files, "create-only")
    return {"memory per file": (memory_in_use(fs) - before) / scale.empty_files}


WORKLOADS = (
    Workload("seqwrite", (Metric("seq write 1M+fsync", "MB/s", 0.5),), seq_write),
    Workload("seqread", (Metric("seq read 1M cold", "MB/s", 0.6),
                         Metric("seq read 1M warm", "MB/s", 0.95)), seq_read),
    Workload("randread", (Metric("randread 4k 1j", "ops/s"),
                          Metric("randread 4k 2j", "ops/s")), random_io("randread")),
    Workload("randwrite", (Metric("randwrite 4k 1j", "ops/s", 0.3),
                           Metric("randwrite 4k 2j", "ops/s")), random_io("randwrite")),
    Workload("files", (Metric("file create", "ops/s", 0.04),
                       Metric("file stat", "ops/s", 0.04),
                       Metric("file list", "entries/s"),
                       Metric("file unlink", "ops/s", 0.04)), files),
    Workload("sqlite", (Metric("sqlite inserts, batches of 1k", "s", 0.5,
                               lower_is_better=True),), sqlite_inserts),
    Workload("mmap", (Metric("mmap dirty+msync", "MB/s", 0.4),), mmap_dirty),
    Workload("punch", (Metric("punch 4k random", "ops/s", 0.1),), punch,
             peer_note=PEER_PUNCH),
    Workload("madvise", (Metric("MADV_REMOVE clean", "ms/call", 1 / 1.3, lower_is_better=True),
                         Metric("MADV_REMOVE dirty", "ms/call", lower_is_better=True)),
             madvise_remove, peer_note=PEER_PUNCH),
    Workload("spill", (Metric("spill write 4xRAM", "MB/s", 0.25),
                       Metric("spill read 4xRAM", "MB/s")), spill, spill=True),
    Workload("memory", (Metric("memory per file", "B/file", lower_is_better=True,
                               ceiling=1024),), memory),
)
