"""The RAM budget and the spill file, seen from the OS side."""

import hashlib
import os
import random
import signal
import stat
import subprocess

import pytest

from support import MiB, drop_page_cache, is_mounted, run_holefs, wait_for


@pytest.fixture
def spill_dir(small_tmpfs):
    return small_tmpfs("600M", "spill")


def block(seed, size=MiB):
    return random.Random(seed).randbytes(size)


def write_blocks(path, count, seed=0):
    with open(path, "wb") as f:
        for i in range(count):
            f.write(block(seed + i))


def spill_mount(mount_holefs, spill_dir, options="size=512M,ram=16M"):
    m = mount_holefs(f"{options},spill={spill_dir}")
    m.spill_dir = str(spill_dir)
    return m


def test_eight_times_the_budget_reads_back_exact(mount_holefs, spill_dir):
    m = spill_mount(mount_holefs, spill_dir)
    path = m / "big"
    write_blocks(path, 128)
    status = m.status()
    assert status["ram_used"] <= 16 * MiB
    assert status["spill_used"] == 128 * MiB - status["ram_used"]
    assert m.tier_blocks("spill") >= 100 * MiB
    drop_page_cache()
    with open(path, "rb") as f:
        for i in range(128):
            assert f.read(MiB) == block(i), f"block {i} differs"
    file_map = m.status(path)["map"]
    assert {r["where"] for r in file_map} == {"ram", "spill"}
    assert sum(r["length"] for r in file_map if r["where"] == "ram") == status["ram_used"]


def test_punching_spilled_data_frees_disk_blocks(mount_holefs, spill_dir):
    m = spill_mount(mount_holefs, spill_dir)
    path = m / "big"
    write_blocks(path, 128)
    before = m.tier_blocks("spill")
    disk_before = _used(spill_dir)
    # The first half went to the spill file: the newest data stays in RAM.
    run_holefs("punch", str(path), "0", "64M")
    freed = before - m.tier_blocks("spill")
    assert freed == 64 * MiB
    assert disk_before - _used(spill_dir) == 64 * MiB
    assert m.status()["spill_used"] == 48 * MiB
    with open(path, "rb") as f:
        assert f.read(64 * MiB) == bytes(64 * MiB)
        for i in range(64, 128):
            assert f.read(MiB) == block(i)


def _used(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_truncate_zero_range_and_unlink_free_spill(mount_holefs, spill_dir):
    m = spill_mount(mount_holefs, spill_dir, "size=256M,ram=4M")
    write_blocks(m / "a", 32)
    write_blocks(m / "b", 32, seed=100)
    spill = m.tier_blocks("spill")
    os.truncate(m / "a", 16 * MiB)
    assert spill - m.tier_blocks("spill") == 16 * MiB
    run_holefs("punch", "--zero", str(m / "b"), "0", "8M")
    assert spill - m.tier_blocks("spill") == 24 * MiB
    assert (m / "b").read_bytes()[:8 * MiB] == bytes(8 * MiB)
    os.unlink(m / "a")
    wait_for(lambda: spill - m.tier_blocks("spill") >= 40 * MiB, what="unlink frees spill")


def test_churn_keeps_the_spill_file_bounded(mount_holefs, spill_dir):
    m = spill_mount(mount_holefs, spill_dir, "size=256M,ram=4M")
    path = m / "churn"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    rng = random.Random(7)
    try:
        for round_ in range(40):
            for _ in range(8):
                offset = rng.randrange(0, 32) * MiB
                os.pwrite(fd, block(round_, MiB), offset)
            punch_at = rng.randrange(0, 32) * MiB
            run_holefs("punch", str(path), str(punch_at), "8M")
    finally:
        os.close(fd)
    spill = os.stat(m.tier_fd("spill"))
    assert spill.st_size <= 40 * MiB  # 32 MiB of file, plus slack for slots
    assert spill.st_blocks * 512 <= 32 * MiB


def test_spill_file_is_private_and_gone_after_kill(mount_holefs, spill_dir):
    m = spill_mount(mount_holefs, spill_dir, "size=128M,ram=1M")
    write_blocks(m / "f", 16)
    fd_path = m.tier_fd("spill")
    st = os.stat(fd_path)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_nlink == 0
    assert os.listdir(spill_dir) == []
    assert _used(spill_dir) >= 15 * MiB
    pid = m.pid
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="daemon death")
    assert os.listdir(spill_dir) == []
    assert _used(spill_dir) == 0
    run_holefs("umount", str(m.path))
    assert not is_mounted(m.path)


def test_writes_use_spill_when_ram_is_full(mount_holefs, spill_dir):
    m = spill_mount(mount_holefs, spill_dir, "size=8M,ram=1M")
    data = block(1, 8 * MiB)
    (m / "f").write_bytes(data)
    assert m.status()["ram_used"] == MiB
    assert m.status()["spill_used"] == 7 * MiB
    with pytest.raises(OSError):
        (m / "g").write_bytes(b"over size=")
    assert hashlib.sha256((m / "f").read_bytes()).digest() == hashlib.sha256(data).digest()


def test_daemon_memory_stays_near_the_budget(mount_holefs, spill_dir, capsys):
    m = spill_mount(mount_holefs, spill_dir)
    rss_before = m.rss()
    write_blocks(m / "big", 128)
    with open(m / "big", "rb") as f:
        while f.read(MiB):
            pass
    rss = m.rss()
    # Data lives in the memfd and the spill file, not in the daemon's heap.
    assert rss - rss_before < 16 * MiB
    with capsys.disabled():
        print(f"\nRSS with 128 MiB written through ram=16M: {rss_before >> 20} -> "
              f"{rss >> 20} MiB; RAM tier {m.tier_blocks('ram') >> 20} MiB")


@pytest.fixture
def odd_dirs(tmp_path):
    """A read-only filesystem, and ramfs, which cannot punch holes."""
    ro, ramfs = tmp_path / "ro", tmp_path / "ramfs"
    ro.mkdir()
    ramfs.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1M", "tmpfs", str(ro)], check=True)
    subprocess.run(["mount", "-t", "ramfs", "ramfs", str(ramfs)], check=True)
    (tmp_path / "file").write_text("")
    yield tmp_path
    subprocess.run(["umount", str(ro)], check=True)
    subprocess.run(["umount", str(ramfs)], check=True)


@pytest.mark.parametrize("spill,message", [
    ("nope", "No such file or directory"),
    ("file", "Not a directory"),
    ("ro", "Read-only file system"),
    ("ramfs", "cannot punch holes"),
])
def test_bad_spill_directory(odd_dirs, tmp_path, spill, message):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_holefs("mount", str(mnt), "-o", f"size=64M,ram=16M,spill={odd_dirs / spill}",
                        check=False)
    assert result.returncode == 1
    assert message in result.stderr
    assert str(odd_dirs / spill) in result.stderr
    assert not is_mounted(mnt)


def test_spill_is_not_used_when_everything_fits_in_ram(mount_holefs, tmp_path):
    m = mount_holefs(f"size=64M,spill={tmp_path / 'does-not-exist'}")
    assert m.status()["spill_dir"] is None
