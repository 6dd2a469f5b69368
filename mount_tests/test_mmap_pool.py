"""Several real processes share one holefs file MAP_SHARED: the buffer pool."""

import errno
import mmap
import os
import pathlib
import subprocess
import sys

import pytest

import holefs
from holefs.release import NotOnHolefs

from support import MiB, drop_page_cache, run_holefs

POOL = 64 * MiB
QUARTER = POOL // 4

POOL_DEMO = str(pathlib.Path(__file__).resolve().parents[1] / "examples" / "pool_demo.py")


class Worker:
    """A C process that holds a mapping of the pool and obeys commands."""

    def __init__(self, exe, path, private=False):
        mode = ["private"] if private else []
        self.proc = subprocess.Popen([exe, str(path), str(POOL), *mode],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self("msync") == "ok"  # the file and the mapping exist now

    def __call__(self, *words):
        self.proc.stdin.write(" ".join(map(str, words)) + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def close(self):
        self.proc.stdin.close()
        assert self.proc.wait(timeout=30) == 0


@pytest.fixture
def workers(cprog):
    started = []

    def start(path, private=False):
        w = Worker(cprog("pool"), path, private)
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.kill()
            w.proc.wait()


def tier_total(m):
    """RAM tier plus spill file, in bytes the kernel really holds."""
    total = m.tier_blocks("ram")
    if m.status()["spill_dir"]:
        total += m.tier_blocks("spill")
    return total


def read_range(path, offset, length):
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


@pytest.fixture(params=["ram", "spill"])
def pool_fs(request, mount_holefs, tmp_path):
    """The pool in RAM, or mostly in the spill file (ram=8M)."""
    if request.param == "ram":
        return mount_holefs("size=256M")
    return mount_holefs(f"size=256M,ram=8M,spill={tmp_path}")


def test_four_workers_share_then_drop_quarters(pool_fs, workers):
    path = pool_fs / "pool"
    ws = [workers(path) for _ in range(4)]
    for i, w in enumerate(ws):
        assert w("fill", i * QUARTER, QUARTER, i + 1) == "ok"
        assert w("msync") == "ok"
    for w in ws:
        for i in range(4):
            assert w("check", i * QUARTER, QUARTER, i + 1) == "ok"
    blocks = os.stat(path).st_blocks * 512
    held, used = tier_total(pool_fs), pool_fs.status()["used"]
    assert blocks == used == POOL

    assert ws[2]("remove", 2 * QUARTER, QUARTER) == "ok"
    for w in ws:
        assert w("check", 2 * QUARTER, QUARTER, 0) == "ok"
        for i in (0, 1, 3):
            assert w("check", i * QUARTER, QUARTER, i + 1) == "ok"
    assert blocks - os.stat(path).st_blocks * 512 == QUARTER
    assert held - tier_total(pool_fs) == QUARTER
    assert used - pool_fs.status()["used"] == QUARTER
    drop_page_cache()
    assert read_range(path, 2 * QUARTER, QUARTER) == bytes(QUARTER)
    assert read_range(path, 3 * QUARTER, QUARTER) == bytes([4]) * QUARTER

    run_holefs("punch", str(path), "16M", "16M")
    for w in ws:
        assert w("check", QUARTER, 2 * QUARTER, 0) == "ok"
        assert w("check", 0, QUARTER, 1) == "ok"
        assert w("check", 3 * QUARTER, QUARTER, 4) == "ok"
    assert blocks - os.stat(path).st_blocks * 512 == 2 * QUARTER
    assert held - tier_total(pool_fs) == 2 * QUARTER
    for w in ws:
        w.close()


def test_python_mmap_sees_what_c_workers_do(fs, workers):
    path = fs / "pool"
    w = workers(path)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), POOL, mmap.MAP_SHARED) as m:
        m[:QUARTER] = b"\x07" * QUARTER
        assert w("check", 0, QUARTER, 7) == "ok"
        assert w("fill", QUARTER, QUARTER, 9) == "ok"
        assert m[QUARTER:2 * QUARTER] == b"\x09" * QUARTER
        holefs.release(m, 0, QUARTER)
        assert w("check", 0, QUARTER, 0) == "ok"
        assert m[:QUARTER] == bytes(QUARTER)
    w.close()


def test_msync_and_fsync_reach_the_daemon(fs, workers):
    path = fs / "pool"
    w = workers(path)
    assert w("fill", 0, MiB, 42) == "ok"
    assert w("msync") == "ok"
    # The daemon has the data: its map says so, and it survives the page cache.
    assert fs.status(path)["map"][0] == {"where": "ram", "start": 0, "length": MiB}
    drop_page_cache()
    assert read_range(path, 0, MiB) == bytes([42]) * MiB
    fd = os.open(path, os.O_RDWR)
    os.pwrite(fd, b"\x05" * MiB, MiB)
    os.fsync(fd)
    os.fdatasync(fd)
    os.close(fd)
    drop_page_cache()
    assert w("check", MiB, MiB, 5) == "ok"
    w.close()


def test_punch_and_zero_read_as_zeros_through_every_path(fs, workers):
    path = fs / "pool"
    w = workers(path)
    assert w("fill", 0, POOL, 0xEE) == "ok"
    assert w("msync") == "ok"
    run_holefs("punch", str(path), "1M", "3M")
    run_holefs("punch", "--zero", str(path), "8M", "1M")
    fd = os.open(path, os.O_RDWR)
    holefs.release(fd, 20 * MiB, MiB)
    os.close(fd)
    other = workers(path)
    for offset, length in ((MiB, 3 * MiB), (8 * MiB, MiB), (20 * MiB, MiB)):
        assert w("check", offset, length, 0) == "ok"
        assert other("check", offset, length, 0) == "ok"
        assert read_range(path, offset, length) == bytes(length)
        assert w("check", offset - 4096, 4096, 0xEE) == "ok"
        assert w("check", offset + length, 4096, 0xEE) == "ok"
    drop_page_cache()
    assert read_range(path, MiB, 3 * MiB) == bytes(3 * MiB)
    assert read_range(path, 0, MiB) == b"\xee" * MiB
    w.close()
    other.close()


def test_private_mapping_gets_eacces_and_holefs_stays_healthy(fs, workers):
    path = fs / "pool"
    private = workers(path, private=True)
    assert private("fill", 0, MiB, 3) == "ok"
    assert private("remove", 0, MiB) == "EACCES"
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), POOL, mmap.MAP_PRIVATE) as m:
        with pytest.raises(PermissionError):
            holefs.release(m, 0, MiB)
    shared = workers(path)
    assert shared("fill", 0, MiB, 8) == "ok"
    assert shared("remove", 0, 4096) == "ok"
    assert shared("check", 0, 4096, 0) == "ok"
    assert shared("check", 4096, MiB - 4096, 8) == "ok"
    private.close()
    shared.close()


def test_release_errors(fs, tmp_path):
    path = fs / "f"
    path.write_bytes(b"x" * MiB)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), MiB, mmap.MAP_SHARED) as m:
        for offset, length in ((100, 4096), (0, 100)):
            with pytest.raises(ValueError, match="multiples of the page size"):
                holefs.release(m, offset, length)
        with pytest.raises(TypeError):
            holefs.release(m, 0, 4096, zero=True)
    with pytest.raises(ValueError):
        holefs.release(path, -1, 10)
    ramfs = tmp_path / "ramfs"
    ramfs.mkdir()
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(ramfs)], check=True)
    try:
        (ramfs / "f").write_bytes(b"y" * 8192)
        with pytest.raises(OSError) as e:
            holefs.release(ramfs / "f", 0, 4096, any_fs=True)
        assert e.value.errno == errno.EOPNOTSUPP
        result = run_holefs("punch", "--any-fs", str(ramfs / "f"), "0", "4k", check=False)
        assert result.returncode == 1 and "Operation not supported" in result.stderr
    finally:
        subprocess.run(["umount", str(ramfs)], check=True)
    assert path.read_bytes() == b"x" * MiB


def test_punch_cli_takes_suffixes(fs):
    path = fs / "f"
    path.write_bytes(b"z" * 3 * MiB)
    run_holefs("punch", str(path), "1M", "1m")
    assert os.stat(path).st_blocks * 512 == 2 * MiB
    assert path.read_bytes() == b"z" * MiB + bytes(MiB) + b"z" * MiB
    bad = run_holefs("punch", str(path), "1Q", "1M", check=False)
    assert bad.returncode == 2 and "1Q" in bad.stderr


def test_pool_demo_tells_the_story(mount_holefs, tmp_path):
    m = mount_holefs(f"size=256M,ram=16M,spill={tmp_path}")
    out = subprocess.run([sys.executable, POOL_DEMO, str(m / "pool")],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert "4 workers filled their 16 MiB sections" in out
    assert out.count("own data intact, dropped sections read zeros") == 8
    assert "wrong" not in out
    blocks = [line.split("st_blocks ")[1].split(" MiB")[0]
              for line in out.splitlines() if "st_blocks" in line]
    assert blocks == ["64", "48", "32"]


def test_punch_refuses_files_elsewhere_unless_asked(tmp_path, small_tmpfs):
    """Punching a file on another filesystem zeroes it and frees no RAM of
    holefs's: refused, unless asked for."""
    for directory in (tmp_path, small_tmpfs("1M")):
        path = directory / "f"
        path.write_bytes(b"k" * 8192)
        with pytest.raises(NotOnHolefs):
            holefs.release(path, 0, 4096)
        result = run_holefs("punch", str(path), "0", "4k", check=False)
        assert result.returncode == 1
        assert result.stderr == (f"holefs: punch: {path}: not on a holefs mount; "
                                 "--any-fs punches it anyway\n")
        assert path.read_bytes() == b"k" * 8192
        run_holefs("punch", "--any-fs", str(path), "0", "4k")
        assert path.read_bytes() == bytes(4096) + b"k" * 4096


def test_pool_demo_refuses_a_path_elsewhere(tmp_path):
    result = subprocess.run([sys.executable, POOL_DEMO, str(tmp_path / "pool")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert f"{tmp_path / 'pool'}: not on a holefs mount" in result.stderr
    assert "Traceback" not in result.stderr
