"""A full filesystem is loud to the program that wrote, through mappings too.

FUSE tells the daemon nothing when a shared mapping is dirtied; it learns
at writeback, when no call of the program's waits.  So a mapped writer that
overfills holefs learns of it from msync, fsync or close, by Linux's rules
for writeback errors (each reported once per open file), where tmpfs kills
it with SIGBUS at the store.  Under -o reserve it learns at the ftruncate
that grew the file, before anything is mapped.
"""

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap

import pytest

from support import HOLEFS, MiB, drop_page_cache, is_mounted, run_holefs, wait_for

PAGE = 4096
OVERFILL = 16 * MiB  # twice what the small mounts hold


def pattern(size):
    """What overfill.c writes: pattern(i) = (i * 131 + 7) | 1, never zero."""
    period = bytes((i * 131 + 7) & 0xFF | 1 for i in range(256))
    return (period * (size // 256 + 1))[:size]


def overfill(cprog, path, size, checks):
    """Run helpers/overfill.c; return its exit status and what each call returned."""
    result = subprocess.run([cprog("overfill"), str(path), str(size), checks],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 128 + signal.SIGBUS), result.stderr
    return result.returncode, dict(line.split() for line in result.stdout.splitlines())


def lost_pages(path, size):
    """Pages of *path* that do not read back as written; each must be zeros."""
    drop_page_cache()
    data, want = path.read_bytes(), pattern(size)
    assert len(data) == size
    lost = [i for i in range(0, size, PAGE) if data[i:i + PAGE] != want[i:i + PAGE]]
    assert all(data[i:i + PAGE] == bytes(PAGE) for i in lost), "a page is neither kept nor lost"
    return lost


# What each call returns, by Linux's rules: the first call that checks
# reports the error, and the open file then has nothing more to report.
REPORTED_BY = {
    "msync,fsync,close": {"msync": "ENOSPC", "fsync": "0", "close": "0"},
    "fsync,close": {"fsync": "ENOSPC", "close": "0"},
    "close": {"close": "ENOSPC"},
}


@pytest.mark.parametrize("checks", REPORTED_BY)
def test_an_overfilled_mapping_is_reported(checks, mount_holefs, cprog):
    m = mount_holefs("size=8M")
    status, calls = overfill(cprog, m / "f", OVERFILL, checks)
    assert status == 0 and calls == REPORTED_BY[checks]
    lost = lost_pages(m / "f", OVERFILL)
    assert len(lost) * PAGE >= OVERFILL - 8 * MiB
    assert m.status()["used"] == 8 * MiB


def test_tmpfs_kills_an_overfilling_writer_at_the_store(small_tmpfs, cprog):
    tmpfs = small_tmpfs("8M")
    status, calls = overfill(cprog, tmpfs / "f", OVERFILL, "msync,fsync,close")
    assert status == 128 + signal.SIGBUS
    assert calls == {"SIGBUS": str(8 * MiB)}


def test_under_reserve_growth_that_does_not_fit_fails_at_ftruncate(mount_holefs, cprog):
    m = mount_holefs("size=8M,reserve")
    status, calls = overfill(cprog, m / "f", OVERFILL, "msync,fsync,close")
    assert status == 0 and calls == {"ftruncate": "ENOSPC"}
    assert os.stat(m / "f").st_size == 0
    assert m.status()["used"] == 0


def test_under_reserve_what_fits_is_kept_and_punching_still_releases(mount_holefs, cprog):
    m = mount_holefs("size=8M,reserve")
    status, calls = overfill(cprog, m / "f", 6 * MiB, "msync,fsync,close")
    assert status == 0 and calls == {"msync": "0", "fsync": "0", "close": "0"}
    assert lost_pages(m / "f", 6 * MiB) == []
    run_holefs("punch", str(m / "f"), "0", "4M")
    assert m.status()["used"] == 2 * MiB
    fd = os.open(m / "f", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as refused:
            os.pwrite(fd, b"!", 16 * MiB - 1)  # 2 MiB held, 10 MiB more asked for
        assert refused.value.errno == errno.ENOSPC
        os.pwrite(fd, b"!", 12 * MiB - 1)      # 6 MiB more: fits exactly
    finally:
        os.close(fd)
    assert m.status()["used"] == 8 * MiB


@pytest.fixture
def foreground(tmp_path):
    """Factory: a holefs daemon in the foreground, whose log the test reads."""
    daemons = []

    def start(options):
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        log = tmp_path / "daemon.log"
        daemon = subprocess.Popen([HOLEFS, "mount", "-f", str(mnt), "-o", options],
                                  stderr=log.open("w"))
        daemons.append((daemon, mnt))
        wait_for(lambda: is_mounted(mnt) or daemon.poll() is not None, what="mount")
        assert is_mounted(mnt), log.read_text()
        return mnt, log

    yield start
    for daemon, mnt in daemons:
        run_holefs("umount", str(mnt), check=False)
        daemon.wait(timeout=30)


def test_refusals_are_logged_with_file_range_and_reason(foreground, cprog):
    mnt, log = foreground("size=8M")
    (mnt / "dir").mkdir()
    status, calls = overfill(cprog, mnt / "dir" / "pool", OVERFILL, "close")
    assert calls == {"close": "ENOSPC"}
    dd = subprocess.run(["dd", "if=/dev/zero", f"of={mnt / 'more'}", "bs=64k", "count=1"],
                        capture_output=True, text=True)
    assert dd.returncode == 1 and "No space left on device" in dd.stderr
    run_holefs("umount", str(mnt))
    lines = log.read_text().splitlines()
    refused = [line for line in lines if " refused: " in line]
    assert re.fullmatch(
        r"WARNING writeback refused: inode \d+ \('/dir/pool'\), \d+ bytes at offset \d+: "
        r"No space left on device \(size= is reached\); the program learns of it only "
        r"if it checks msync, fsync or close", refused[0]), refused[0]
    # Megabytes of refused writeback come as many requests; five lines say it.
    assert len(refused) == 5, lines


SHARED_MEMORY = textwrap.dedent("""\
    import subprocess, sys
    from multiprocessing import resource_tracker, shared_memory
    size = int(sys.argv[1])
    segment = shared_memory.SharedMemory("holefs-pool", create=True, size=size)
    # The test reads the segment after this process is gone.
    resource_tracker.unregister(segment._name, "shared_memory")
    period = bytes((i * 131 + 7) & 0xFF | 1 for i in range(256))
    writer = ("from multiprocessing import shared_memory, resource_tracker; import sys; "
              "s = shared_memory.SharedMemory('holefs-pool'); "
              "resource_tracker.unregister(s._name, 'shared_memory'); "
              "s.buf[:] = (bytes.fromhex(sys.argv[1]) * (s.size // 256 + 1))[:s.size]; s.close()")
    subprocess.run([sys.executable, "-c", writer, period.hex()], check=True)
    assert bytes(segment.buf[:256]) == period and bytes(segment.buf[-256:]) == period[-256:]
    segment.close()
    print("shared", size)
""")


def on_dev_shm(mnt, size):
    """Create and share a SharedMemory segment with *mnt* bind-mounted over
    /dev/shm, in a mount namespace of its own, as a container would."""
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", 'mount --bind "$1" /dev/shm && shift && exec "$@"', "sh",
         str(mnt), sys.executable, "-c", SHARED_MEMORY, str(size)],
        capture_output=True, text=True, timeout=120)


def test_shared_memory_on_holefs_as_dev_shm(mount_holefs):
    m = mount_holefs("size=64M")
    result = on_dev_shm(m.path, 32 * MiB)
    assert result.returncode == 0 and result.stdout == f"shared {32 * MiB}\n", result.stderr
    assert lost_pages(m / "holefs-pool", 32 * MiB) == []


def test_under_reserve_a_segment_that_does_not_fit_fails_at_creation(mount_holefs):
    m = mount_holefs("size=64M,reserve")
    result = on_dev_shm(m.path, 256 * MiB)
    assert result.returncode == 1
    assert "OSError: [Errno 28] No space left on device" in result.stderr
    assert not (m / "holefs-pool").exists()
    assert m.status()["used"] == 0


@pytest.mark.parametrize("reserve", ["", ",reserve"])
def test_a_segment_fits_in_ram_plus_spill(reserve, mount_holefs, tmp_path):
    m = mount_holefs(f"size=64M,ram=16M,spill={tmp_path}{reserve}")
    result = on_dev_shm(m.path, 48 * MiB)
    assert result.returncode == 0, result.stderr
    status = m.status()
    assert status["spill_used"] >= 32 * MiB
    assert lost_pages(m / "holefs-pool", 48 * MiB) == []
