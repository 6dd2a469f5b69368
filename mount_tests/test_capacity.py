"""Space that tells the truth: page-grain accounting, holes, RAM and spill,
measured side by side with a kernel tmpfs where tmpfs has the behaviour."""

import json
import os
import random
import shutil
import subprocess

import pytest

from holefs._fallocate import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, fallocate
from holefs.extents import CHUNK, PAGE

from support import HOLEFS, MiB, drop_page_cache, run_holefs, wait_for

KiB = 1 << 10


@pytest.fixture
def both(mount_holefs, small_tmpfs):
    """A holefs and a tmpfs of 256 MiB, everything in RAM."""
    return {"holefs": mount_holefs("size=256M").path, "tmpfs": small_tmpfs("256M")}


def df_used(path):
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def test_small_files_cost_what_they_cost_on_tmpfs(both):
    for root in both.values():
        for i in range(1000):
            (root / f"f{i}").write_bytes(b"hi")
    used = {kind: df_used(root) for kind, root in both.items()}
    assert used["holefs"] == used["tmpfs"] == 1000 * PAGE
    assert {os.stat(root / "f0").st_blocks for root in both.values()} == {PAGE // 512}


def test_a_tree_of_python_files_costs_what_it_costs_on_tmpfs(both):
    tree = os.path.dirname(os.__file__)  # the standard library: some thousands of files
    for root in both.values():
        shutil.copytree(tree, root / "lib", symlinks=True,
                        ignore=shutil.ignore_patterns("site-packages", "dist-packages"))
    used = {kind: df_used(root) for kind, root in both.items()}
    assert used["tmpfs"] > 10 * MiB
    assert abs(used["holefs"] - used["tmpfs"]) <= used["tmpfs"] * 0.02, used


def test_4k_punches_show_in_st_blocks_and_df(both):
    offsets = random.Random(7).sample(range(0, 64 * MiB, PAGE), 1000)
    for kind, root in both.items():
        path = root / "f"
        path.write_bytes(os.urandom(64 * MiB))
        blocks, used = os.stat(path).st_blocks, df_used(root)
        fd = os.open(path, os.O_WRONLY)
        try:
            for offset in offsets:
                fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, PAGE)
        finally:
            os.close(fd)
        assert blocks - os.stat(path).st_blocks == 8000, kind
        assert used - df_used(root) == 1000 * PAGE, kind


def seek(path, offset, whence):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, offset, whence)
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def test_seek_hole_and_data_at_page_grain(both):
    for kind, root in both.items():
        written = root / "written"
        written.write_bytes(b"d" * 8 * KiB + bytes(0))
        os.truncate(written, 16 * KiB)
        assert seek(written, 0, os.SEEK_HOLE) == 8 * KiB, kind
        assert os.stat(written).st_blksize == PAGE, kind

        punched = root / "punched"
        punched.write_bytes(b"p" * 64 * KiB)
        fd = os.open(punched, os.O_WRONLY)
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 12 * KiB, 8 * KiB)
        os.close(fd)
        assert seek(punched, 0, os.SEEK_HOLE) == 12 * KiB, kind
        assert seek(punched, 12 * KiB, os.SEEK_DATA) == 20 * KiB, kind

        reserved = root / "reserved"
        fd = os.open(reserved, os.O_RDWR | os.O_CREAT)
        os.pwrite(fd, b"r", 0)
        fallocate(fd, 0, 0, 32 * KiB)
        fallocate(fd, FALLOC_FL_KEEP_SIZE, 32 * KiB, 32 * KiB)
        os.pwrite(fd, b"r", 20 * KiB)
        os.close(fd)
        assert os.stat(reserved).st_blocks == 64 * KiB // 512, kind
        assert seek(reserved, 1, os.SEEK_DATA) == 1, kind
        assert seek(reserved, PAGE, os.SEEK_DATA) == 20 * KiB, kind
        assert seek(reserved, 20 * KiB, os.SEEK_HOLE) == 24 * KiB, kind


def where(m, path):
    """Bytes of *path* in RAM and in spill, as holefs status tells."""
    status = m.status(path)
    return status["ram"], status["spill"]


def test_the_hot_set_returns_to_ram_after_a_burst(mount_holefs, tmp_path):
    m = mount_holefs(f"size=256M,ram=16M,spill={tmp_path}")
    hot = m / "hot"
    hot.write_bytes(os.urandom(8 * MiB))
    (m / "burst").write_bytes(os.urandom(32 * MiB))
    assert where(m, hot) == (0, 8 * MiB), "the burst pushed the hot file out"
    hot.read_bytes()  # RAM is full of the burst: a scan reads in place, evicting nothing
    assert where(m, hot) == (0, 8 * MiB)
    os.unlink(m / "burst")
    wait_for(lambda: m.status()["used"] == 8 * MiB, what="the burst's pages freed")
    drop_page_cache()
    hot.read_bytes()
    assert where(m, hot) == (8 * MiB, 0), "the hot file came back to RAM"
    assert m.status()["spill_used"] == 0 and m.tier_blocks("spill") == 0


def test_writing_a_spilled_chunk_brings_it_back_when_ram_has_room(mount_holefs, tmp_path):
    m = mount_holefs(f"size=256M,ram=1M,spill={tmp_path}")
    (m / "a").write_bytes(b"a" * MiB)
    (m / "b").write_bytes(b"b" * MiB)            # a spills
    assert where(m, m / "a") == (0, MiB)
    os.unlink(m / "b")
    wait_for(lambda: m.status()["used"] == MiB, what="b's pages freed")
    with open(m / "a", "r+b") as f:
        f.write(b"A")
    ram, spill = where(m, m / "a")
    assert ram >= CHUNK and ram + spill == MiB
    assert (m / "a").read_bytes() == b"A" + b"a" * (MiB - 1)


def test_df_counts_the_spill_disk_and_writes_stop_where_it_said(mount_holefs, small_tmpfs):
    disk = small_tmpfs("64M", name="spilldisk")
    m = mount_holefs(f"size=1G,ram=16M,spill={disk}")
    st = os.statvfs(m.path)
    available = st.f_bavail * st.f_frsize
    assert st.f_blocks * st.f_frsize == 1 << 30
    assert 79 * MiB <= available <= 80 * MiB
    dd = subprocess.run(["dd", "if=/dev/zero", f"of={m / 'f'}", "bs=64k"],
                        capture_output=True, text=True, timeout=120)
    assert "No space left on device" in dd.stderr
    assert os.stat(m / "f").st_size == available
    assert os.statvfs(m.path).f_bavail == 0


def test_mount_warns_about_a_spill_directory_that_cannot_hold_size(small_tmpfs, public_dir):
    disk = small_tmpfs("8M", name="spilldisk")
    mnt = public_dir / "mnt"
    mnt.mkdir()
    result = run_holefs("mount", str(mnt), "-o", f"size=64M,ram=16M,spill={disk}")
    try:
        assert result.returncode == 0, result.stderr
        assert f"spill directory {disk} is on tmpfs: spilled data stays in memory" in result.stderr
        assert (f"size= leaves 48 MiB beyond ram=, but {disk} has 8 MiB free: "
                "writes will fail with ENOSPC before size= is reached") in result.stderr
    finally:
        run_holefs("umount", str(mnt), check=False)


def test_status_of_a_file_of_many_fragments(fs):
    path = fs / "fragments"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for i in range(0, 4000, 2):
            os.pwrite(fd, b"x", i * CHUNK)
    finally:
        os.close(fd)
    table = subprocess.run([HOLEFS, "status", str(path)], capture_output=True, text=True)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0] == (f"size {3998 * CHUNK + 1} ({3998 * CHUNK / MiB:.1f} MiB): "
                        f"ram {2000 * PAGE / MiB:.1f} MiB, spill 0 B, "
                        f"hole {(3998 * CHUNK + 1 - 2000 * PAGE) / MiB:.1f} MiB")
    assert len(lines) == 2 + 3999
    full = json.loads(subprocess.run([HOLEFS, "status", "--json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    assert full["runs"] == len(full["map"]) == 3999
    assert full["map"][-1] == {"where": "ram", "start": 3998 * CHUNK, "length": PAGE}
    assert sum(run["length"] for run in full["map"]) == 3998 * CHUNK + PAGE
