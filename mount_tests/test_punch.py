"""fallocate, SEEK_DATA/SEEK_HOLE, MADV_REMOVE, and memory that really goes back."""

import errno
import mmap
import os
import subprocess
import tarfile
import threading

import pytest

from holefs import release
from holefs.extents import CHUNK, PAGE

from support import MiB, wait_for

KEEP_SIZE, PUNCH_HOLE, COLLAPSE_RANGE, ZERO_RANGE, INSERT_RANGE = 0x1, 0x2, 0x8, 0x10, 0x20


def falloc(cprog, path, mode, offset, length):
    """fallocate(2) from a separate C process; returns 'ok' or the errno name."""
    return subprocess.run([cprog("falloc"), str(path), hex(mode), str(offset), str(length)],
                          capture_output=True, text=True, timeout=30).stdout.strip()


def fill(path, size, byte=b"\xab"):
    with open(path, "wb") as f:
        f.write(byte * size)


def test_madvise_remove_from_c(fs, cprog):
    """The C program maps, writes, MADV_REMOVEs the middle and checks everything."""
    path = fs / "pool"
    ram_before = fs.tier_blocks("ram")
    result = subprocess.run([cprog("madvise_remove"), str(path), str(16 * MiB),
                             str(4 * MiB), str(8 * MiB)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    want = f"blocks_before={16 * MiB // 512} blocks_after={8 * MiB // 512}"
    assert result.stdout.strip() == want
    assert fs.tier_blocks("ram") - ram_before == 8 * MiB
    assert fs.status(path)["map"] == [
        {"where": "ram", "start": 0, "length": 4 * MiB},
        {"where": "hole", "start": 4 * MiB, "length": 8 * MiB},
        {"where": "ram", "start": 12 * MiB, "length": 4 * MiB},
    ]


def test_punch_of_64_mib_returns_the_memory(fs, capsys):
    path = fs / "big"
    fill(path, 80 * MiB)
    ram = fs.tier_blocks("ram")
    rss = fs.rss()
    df_used = _df_used(fs.path)
    subprocess.run(["fallocate", "-p", "-o", str(8 * MiB), "-l", str(64 * MiB), str(path)],
                   check=True)
    assert ram - fs.tier_blocks("ram") == 64 * MiB
    assert os.stat(path).st_blocks * 512 == 16 * MiB
    assert df_used - _df_used(fs.path) == 64 * MiB
    assert os.stat(path).st_size == 80 * MiB
    with open(path, "rb") as f:
        f.seek(8 * MiB - 1)
        assert f.read(2) == b"\xab\0"
        f.seek(72 * MiB - 1)
        assert f.read(2) == b"\0\xab"
    # File data never sits in the daemon's heap: its RSS did not grow by it.
    assert fs.rss() < rss + 8 * MiB
    with capsys.disabled():
        print(f"\n64 MiB punch: RAM tier {ram >> 20} -> {fs.tier_blocks('ram') >> 20} MiB, "
              f"daemon RSS {rss >> 20} -> {fs.rss() >> 20} MiB")


def _df_used(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_fallocate_reserves_and_extends(fs, cprog):
    path = fs / "f"
    path.write_bytes(b"abc")
    assert falloc(cprog, path, 0, 0, 4 * MiB) == "ok"
    st = os.stat(path)
    assert st.st_size == 4 * MiB and st.st_blocks * 512 == 4 * MiB
    assert path.read_bytes()[:4] == b"abc\0"
    assert falloc(cprog, path, KEEP_SIZE, 4 * MiB, MiB) == "ok"
    st = os.stat(path)
    assert st.st_size == 4 * MiB and st.st_blocks * 512 == 5 * MiB


def test_fallocate_enospc_changes_nothing(mount_holefs, cprog):
    m = mount_holefs("size=4M")
    path = m / "f"
    path.write_bytes(b"keep")
    assert falloc(cprog, path, 0, 0, 8 * MiB) == "ENOSPC"
    assert os.stat(path).st_size == 4
    assert os.stat(path).st_blocks * 512 == PAGE
    assert path.read_bytes() == b"keep"


def test_punch_hole_keeps_size(fs, cprog):
    path = fs / "f"
    fill(path, 4 * MiB)
    assert falloc(cprog, path, PUNCH_HOLE | KEEP_SIZE, 100, 3 * MiB) == "ok"
    data = path.read_bytes()
    assert len(data) == 4 * MiB
    assert data[:100] == b"\xab" * 100
    assert data[100:100 + 3 * MiB] == bytes(3 * MiB)
    assert data[100 + 3 * MiB:] == b"\xab" * (MiB - 100)
    # Whole pages inside the range are gone; the two partial ones stay.
    assert os.stat(path).st_blocks * 512 == 4 * MiB - (3 * MiB // PAGE - 1) * PAGE


@pytest.mark.parametrize("mode", [ZERO_RANGE, ZERO_RANGE | KEEP_SIZE])
def test_zero_range(fs, cprog, mode):
    path = fs / "f"
    fill(path, MiB)
    assert falloc(cprog, path, mode, MiB - 10, 2 * MiB) == "ok"
    data = path.read_bytes()
    want_size = MiB if mode & KEEP_SIZE else 3 * MiB - 10
    assert len(data) == want_size
    assert data[:MiB - 10] == b"\xab" * (MiB - 10)
    assert data[MiB - 10:] == bytes(want_size - MiB + 10)
    assert os.stat(path).st_blocks * 512 == -(-(3 * MiB - 10) // PAGE) * PAGE


@pytest.mark.parametrize("mode", [PUNCH_HOLE, COLLAPSE_RANGE, INSERT_RANGE, 0x40])
def test_other_modes_are_not_supported(fs, cprog, mode):
    path = fs / "f"
    fill(path, MiB)
    assert falloc(cprog, path, mode, 0, CHUNK) == "EOPNOTSUPP"
    assert path.read_bytes() == b"\xab" * MiB
    # The kernel did not give up on fallocate for the mount.
    assert falloc(cprog, path, PUNCH_HOLE | KEEP_SIZE, 0, CHUNK) == "ok"


@pytest.mark.parametrize("offset,length,error", [
    (-1, 10, "EINVAL"), (0, 0, "EINVAL"), (1 << 62, 1 << 62, "EFBIG"),
])
def test_impossible_ranges(fs, cprog, offset, length, error):
    path = fs / "f"
    fill(path, 1000)
    assert falloc(cprog, path, PUNCH_HOLE | KEEP_SIZE, offset, length) == error
    assert path.read_bytes() == b"\xab" * 1000


def test_punch_far_past_eof_is_harmless(fs, cprog):
    path = fs / "f"
    fill(path, 1000)
    assert falloc(cprog, path, PUNCH_HOLE | KEEP_SIZE, 1 << 50, 1 << 40) == "ok"
    assert path.read_bytes() == b"\xab" * 1000


def test_seek_data_and_hole(fs):
    path = fs / "sparse"
    with open(path, "wb") as f:
        f.seek(MiB)
        f.write(b"d" * CHUNK)
        f.seek(4 * MiB)
        f.write(b"e")
        f.truncate(6 * MiB)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_DATA) == MiB
        assert os.lseek(fd, MiB, os.SEEK_HOLE) == MiB + CHUNK
        assert os.lseek(fd, MiB + CHUNK, os.SEEK_DATA) == 4 * MiB
        assert os.lseek(fd, 4 * MiB, os.SEEK_HOLE) == 4 * MiB + PAGE
        assert os.lseek(fd, 5 * MiB, os.SEEK_HOLE) == 5 * MiB
        for whence in (os.SEEK_DATA, os.SEEK_HOLE):
            with pytest.raises(OSError) as e:
                os.lseek(fd, 6 * MiB, whence)
            assert e.value.errno == errno.ENXIO
        with pytest.raises(OSError) as e:
            os.lseek(fd, 4 * MiB + PAGE, os.SEEK_DATA)
        assert e.value.errno == errno.ENXIO
    finally:
        os.close(fd)


def test_cp_and_tar_see_the_holes(fs, tmp_path):
    path = fs / "sparse"
    with open(path, "wb") as f:
        f.write(b"head")
        f.seek(32 * MiB)
        f.write(b"tail")
    subprocess.run(["cp", "--sparse=always", str(path), str(fs / "copy")], check=True)
    assert (fs / "copy").read_bytes() == path.read_bytes()
    assert os.stat(fs / "copy").st_blocks == os.stat(path).st_blocks == 2 * PAGE // 512
    archive = tmp_path / "a.tar"
    subprocess.run(["tar", "-S", "-cf", str(archive), "-C", str(fs.path), "sparse"], check=True)
    with tarfile.open(archive) as t:
        member = t.getmember("sparse")
        assert member.issparse()
        assert [(offset, n) for offset, n in member.sparse if n] == [(0, PAGE), (32 * MiB, 4)]


def test_truncate_and_unlink_give_memory_back(fs):
    path = fs / "f"
    fill(path, 32 * MiB)
    assert fs.tier_blocks("ram") == 32 * MiB
    os.truncate(path, 8 * MiB + 1)
    assert fs.tier_blocks("ram") == 8 * MiB + 4096
    assert os.stat(path).st_blocks * 512 == 8 * MiB + PAGE
    os.unlink(path)
    wait_for(lambda: fs.tier_blocks("ram") == 0, what="unlinked data freed")
    assert fs.status()["used"] == 0


def test_full_filesystem_writes_what_fits(mount_holefs):
    m = mount_holefs("size=1M")
    path = m / "f"
    result = subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=256k", "count=8"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "No space left on device" in result.stderr
    assert os.stat(path).st_size == MiB
    assert path.read_bytes() == bytes(MiB)
    with pytest.raises(OSError) as e:
        with open(m / "g", "wb") as f:
            f.write(b"x")
    assert e.value.errno == errno.ENOSPC
    os.truncate(path, MiB // 2)
    (m / "g").write_bytes(b"room again")
    assert (m / "g").read_bytes() == b"room again"
    assert m.status()["used"] == MiB // 2 + PAGE


def test_a_huge_punch_lets_other_requests_in(mount_holefs):
    """A punch of 1 GiB is freed in batches (fs.PUNCH_BATCH), and another
    client's requests are served between them rather than after all."""
    m = mount_holefs("size=2G")
    big, small = m / "big", m / "small"
    with open(big, "wb") as f:
        for _ in range(1024):
            f.write(b"b" * MiB)
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    small.write_bytes(b"s" * 4096)
    punching = threading.Event()
    served_meanwhile = []

    def other_client():
        fd = os.open(small, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)
        try:
            while not punching.is_set():
                os.preadv(fd, [buf], 0)
            while punching.is_set():
                os.preadv(fd, [buf], 0)
                served_meanwhile.append(1)
        finally:
            os.close(fd)

    reader = threading.Thread(target=other_client)
    with open(big, "r+b") as f:
        reader.start()
        punching.set()
        release(f.fileno(), 0, 1024 * MiB)
        punching.clear()
    reader.join()
    assert m.status()["used"] == 4096
    assert len(served_meanwhile) >= 10, f"{len(served_meanwhile)} reads served during the punch"
