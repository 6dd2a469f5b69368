"""Live reconfiguration: holefs remount and mount -o remount on a running mount."""

import os
import subprocess
import sys
import time

import pytest

from support import (
    HOLEFS,
    MiB,
    as_nobody,
    daemon_log,
    drop_page_cache,
    force_unmount,
    is_mounted,
    run_holefs,
)

# Rewrites and reads back its own 16 MiB file until stdin closes, with the
# page cache dropped, so that every read reaches the daemon; prints the
# loops done and the slowest loop in ms.
BUSY_CLIENT = r"""
import os, select, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
done, slowest = 0, 0.0
while not select.select([sys.stdin], [], [], 0)[0]:
    offset = (done % 64) * 256 * 1024
    block = os.urandom(256 * 1024)
    started = time.monotonic()
    assert os.pwrite(fd, block, offset) == len(block)
    os.posix_fadvise(fd, offset, len(block), os.POSIX_FADV_DONTNEED)
    assert os.pread(fd, len(block), offset) == block, "read back differs"
    slowest = max(slowest, time.monotonic() - started)
    done += 1
    if done == 1:
        print("running", flush=True)
print(done, round(slowest * 1000, 1), flush=True)
"""


def test_holefs_remount_changes_size_ram_and_inodes(mount_holefs):
    m = mount_holefs("size=16M")
    result = run_holefs("remount", str(m.path), "-o", "size=48M", "-o", "nr_inodes=1000")
    assert result.stderr == ""
    status = m.status()
    assert status["size"] == 48 * MiB and status["ram_budget"] == 48 * MiB
    assert status["inodes_used"] + status["inodes_free"] == 1000
    assert "size=49152k,ram=49152k,nr_inodes=1000," in status["options"]
    st = os.statvfs(m.path)
    assert st.f_blocks * st.f_frsize == 48 * MiB and st.f_files == 1000
    # What fits now and did not before.
    (m / "f").write_bytes(bytes(32 * MiB))


@pytest.mark.parametrize("how", ["holefs mount", "mount -t fuse.holefs"])
def test_mount_o_remount(public_dir, tmp_path, how):
    mnt = public_dir / "mnt"
    mnt.mkdir()
    try:
        if how == "holefs mount":
            run_holefs("mount", str(mnt), "-o", "size=16M")
        else:
            subprocess.run(["mount", "-t", "fuse.holefs", "none", str(mnt),
                            "-o", "size=16M,nosuid,nodev"], check=True, timeout=30)
        (mnt / "f").write_bytes(bytes(4 * MiB))
        remount = subprocess.run(["mount", "-o", f"remount,size=32M,ram=8M,nr_inodes=100,"
                                  f"spill={tmp_path}", str(mnt)],
                                 capture_output=True, text=True, timeout=30)
        assert remount.returncode == 0, remount.stderr
        status = run_holefs("status", "--json", str(mnt)).stdout
        assert '"size": 33554432' in status and '"ram_budget": 8388608' in status
        assert os.statvfs(mnt).f_blocks * 4096 == 32 * MiB
        assert os.statvfs(mnt).f_files == 100
        refused = subprocess.run(["mount", "-o", "remount,size=1M", str(mnt)],
                                 capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0
        assert f"holefs: remount: {mnt}: size=1.0 MiB is less than the 4.0 MiB in use" \
            in refused.stderr
        assert os.statvfs(mnt).f_blocks * 4096 == 32 * MiB
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        force_unmount(mnt)
    assert not is_mounted(mnt)


def test_ram_shrinks_to_spill_while_a_process_reads_and_writes(mount_holefs, tmp_path):
    m = mount_holefs(f"size=512M,ram=256M,spill={tmp_path}")
    cold = os.urandom(MiB) * 192
    (m / "cold").write_bytes(cold)
    client = subprocess.Popen([sys.executable, "-c", BUSY_CLIENT, str(m / "hot")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline() == "running\n"
        started = time.monotonic()
        result = run_holefs("remount", str(m.path), "-o", "ram=32M", check=False)
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        status = m.status()
        out, _ = client.communicate("stop\n", timeout=30)
    finally:
        if client.poll() is None:
            client.kill()
    assert client.returncode == 0, "the client saw an error"
    loops, slowest_ms = out.split()
    print(f"ram 256M -> 32M moved {status['spill_used'] // MiB} MiB in {took:.2f} s; "
          f"client: {loops} loops, slowest {slowest_ms} ms")
    # The remount returned once RAM fit; the coldest data went to spill.
    assert status["ram_budget"] == 32 * MiB and status["ram_used"] <= 32 * MiB
    # All that RAM no longer holds is in spill, however far the client got.
    assert status["spill_used"] + status["ram_used"] == status["used"]
    assert status["spill_used"] >= status["used"] - 32 * MiB >= (192 - 32) * MiB
    assert m.tier_blocks("ram") <= 33 * MiB
    assert float(slowest_ms) < 500, "a request waited behind the shrink"
    assert "ram=32.0 MiB reached: moved" in daemon_log(status["pid"], m.path)
    drop_page_cache()
    assert (m / "cold").read_bytes() == cold


def test_shrinking_below_use_is_refused(mount_holefs):
    m = mount_holefs("size=16M,nr_inodes=100")
    (m / "f").write_bytes(bytes(8 * MiB))
    for i in range(9):
        (m / f"e{i}").touch()
    before = m.status()
    for options, why in [("size=4M", "size=4.0 MiB is less than the 8.0 MiB in use"),
                         ("nr_inodes=5",
                          "nr_inodes=5 is less than the 11 inodes in use, xattrs counted")]:
        result = run_holefs("remount", str(m.path), "-o", options, check=False)
        assert result.returncode == 1
        assert result.stderr == f"holefs: remount: {m.path}: {why}\n"
        assert m.status()["options"] == before["options"]
        assert why in daemon_log(before["pid"], m.path)
    assert run_holefs("remount", str(m.path), "-o", "size=8M,nr_inodes=11").returncode == 0


def test_spill_turned_on_later(mount_holefs, tmp_path):
    m = mount_holefs("size=64M")
    data = os.urandom(32 * MiB)
    (m / "f").write_bytes(data)
    missing = tmp_path / "missing"
    result = run_holefs("remount", str(m.path), "-o", f"ram=8M,spill={missing}", check=False)
    assert result.returncode == 1
    assert f"ram= below size= turns spill on, which failed: spill directory {missing}: " \
        "No such file or directory; ram=8.0 MiB is less than the 32.0 MiB in RAM" \
        in result.stderr
    assert m.status()["spill_dir"] is None
    run_holefs("remount", str(m.path), "-o", f"ram=8M,spill={tmp_path}")
    status = m.status()
    assert status["spill_dir"] == str(tmp_path) and status["spill_used"] == 24 * MiB
    result = run_holefs("remount", str(m.path), "-o", "spill=/var/tmp", check=False)
    assert "the spill file is open in" in result.stderr
    drop_page_cache()
    assert (m / "f").read_bytes() == data


@pytest.mark.parametrize("options,why", [
    ("mode=700", "mode=700: the root directory's mode is set at mount; chmod"),
    ("uid=65534", "uid=65534: the root directory's owner is set at mount"),
    ("reserve", "reserve: reserve applies to files from the mount on"),
    ("allow_other", "allow_other: who may use the mount is set when it is mounted"),
    ("bogus", "unknown option 'bogus'"),
])
def test_what_cannot_change_live_is_refused(mount_holefs, options, why):
    m = mount_holefs("size=16M")
    before = m.status()["options"]
    result = run_holefs("remount", str(m.path), "-o", options, check=False)
    assert result.returncode == 1
    assert result.stderr.startswith(f"holefs: remount: {m.path}: {why}")
    assert m.status()["options"] == before


def test_what_is_unchanged_is_accepted(mount_holefs):
    m = mount_holefs("size=16M")
    st = os.stat(m.path)
    run_holefs("remount", str(m.path), "-o", f"rw,nosuid,nodev,mode=1777,uid={st.st_uid},"
               f"gid={st.st_gid},fsname=holefs,size=32M")
    assert m.status()["size"] == 32 * MiB


def test_another_user_may_not_remount(mount_holefs):
    m = mount_holefs("size=16M,allow_other")
    before = m.status()
    result = as_nobody(HOLEFS, "remount", str(m.path),
                       "-o", "size=1G")
    assert result.returncode == 1
    assert result.stderr == (f"holefs: remount: {m.path}: only root or the mount's owner "
                             "(uid 0) may remount it, not uid 65534\n")
    assert m.status()["size"] == before["size"] == 16 * MiB
    assert "remount of" in daemon_log(before["pid"], m.path)


def test_remount_of_what_is_not_holefs(small_tmpfs, tmp_path):
    assert run_holefs("remount", str(small_tmpfs("1M")), "-o", "size=2M",
                      check=False).stderr.endswith("not a holefs mount (it is tmpfs)\n")
    assert run_holefs("remount", str(tmp_path), "-o", "size=2M",
                      check=False).stderr == f"holefs: remount: {tmp_path}: not mounted\n"
