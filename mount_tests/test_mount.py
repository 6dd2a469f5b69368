"""Mounting and unmounting: the CLI, mount(8), fstab, and the errors."""

import errno
import json
import os
import signal
import subprocess
import sys

import pytest

from support import (
    HOLEFS,
    MiB,
    as_nobody,
    force_unmount,
    is_mounted,
    kernel_version,
    run_holefs,
    wait_for,
)


def test_mount_serves_and_umount_removes(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_holefs("mount", str(mnt), "-o", "size=64M")
    try:
        assert result.returncode == 0 and result.stdout == ""
        assert is_mounted(mnt)
        (mnt / "hello").write_text("world")
        assert (mnt / "hello").read_text() == "world"
        st = os.statvfs(mnt)
        assert st.f_blocks * st.f_frsize == 64 * MiB
        pid = json.loads(os.getxattr(mnt, "holefs.status"))["pid"]
        assert run_holefs("umount", str(mnt)).returncode == 0
        assert not is_mounted(mnt)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="daemon exit")
    finally:
        force_unmount(mnt)


def test_default_size_is_half_of_ram(mount_holefs):
    m = mount_holefs()
    st = os.statvfs(m.path)
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert abs(st.f_blocks * st.f_frsize - memory // 2) < MiB


def test_missing_mountpoint(tmp_path):
    result = run_holefs("mount", str(tmp_path / "nope"), check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == f"holefs: mount: {tmp_path / 'nope'}: no such directory"


def test_mountpoint_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    result = run_holefs("mount", str(tmp_path / "file"), check=False)
    assert result.returncode == 1
    assert "not a directory" in result.stderr


def test_second_mount_on_the_same_directory_fails(mount_holefs):
    m = mount_holefs("size=16M")
    result = run_holefs("mount", str(m.path), check=False)
    assert result.returncode == 1
    assert "already mounted" in result.stderr
    assert (m / "x").write_text("still served") > 0


def test_umount_cleans_up_after_a_killed_daemon(mount_holefs):
    m = mount_holefs("size=16M")
    os.kill(m.pid, signal.SIGKILL)
    wait_for(lambda: _stat_errno(m.path) is not None, what="dead mount")
    assert _stat_errno(m.path) == "ENOTCONN"
    refused = run_holefs("mount", str(m.path), check=False)
    assert refused.returncode == 1 and "holefs umount" in refused.stderr
    assert run_holefs("umount", str(m.path)).returncode == 0
    assert not is_mounted(m.path)
    again = mount_holefs("size=16M")
    (again / "f").write_bytes(b"fresh")
    assert (again / "f").read_bytes() == b"fresh"


def _stat_errno(path):
    try:
        os.statvfs(path)
    except OSError as e:
        return errno.errorcode[e.errno]
    return None


def test_umount_of_something_not_mounted_fails(tmp_path):
    result = run_holefs("umount", str(tmp_path), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("holefs: umount:")


def test_mount_t_fuse_holefs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "fuse.holefs", "none", str(mnt), "-o", "size=1G"],
                       check=True, timeout=30)
        assert is_mounted(mnt)
        assert os.statvfs(mnt).f_blocks * 4096 == 1 << 30
        (mnt / "f").write_text("via mount(8)")
        assert (mnt / "f").read_text() == "via mount(8)"
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        force_unmount(mnt)
    assert not is_mounted(mnt)


def test_fstab_line(tmp_path):
    mnt = tmp_path / "pool"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"pool {mnt} fuse.holefs size=32M,ram=16M,spill={tmp_path},nofail 0 0\n")
    try:
        subprocess.run(["mount", "-T", str(fstab), str(mnt)], check=True, timeout=30)
        assert is_mounted(mnt)
        with open("/proc/mounts") as f:
            line = next(line for line in f if line.split()[1] == str(mnt))
        assert line.split()[0] == "pool" and line.split()[2] == "fuse.holefs"
        status = json.loads(os.getxattr(mnt, "holefs.status"))
        assert status["size"] == 32 * MiB and status["ram_budget"] == 16 * MiB
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        force_unmount(mnt)


def test_help_documents_options():
    out = run_holefs("mount", "--help").stdout
    for word in ("size=", "nr_inodes=", "mode=", "uid=", "gid=", "ram=", "spill=",
                 "/var/tmp", "allow_other", "fsname="):
        assert word in out


def test_status_of_mount_and_file(fs):
    (fs / "f").write_bytes(b"x" * 100)
    table = run_holefs("status", str(fs.path)).stdout
    assert "size" in table and "256.0 MiB" in table and "inodes" in table
    data = json.loads(run_holefs("status", "--json", str(fs.path)).stdout)
    assert data["used"] == 4096 and data["inodes_used"] == 2
    file_map = json.loads(run_holefs("status", "--json", str(fs / "f")).stdout)
    assert file_map["map"] == [{"where": "ram", "start": 0, "length": 4096}]
    first = run_holefs("status", str(fs / "f")).stdout.splitlines()[0]
    assert first == "size 100 (100 B): ram 4.0 KiB, spill 0 B, hole 0 B"


def test_status_needs_no_root(mount_holefs):
    m = mount_holefs("size=16M,allow_other")
    (m / "mine").write_bytes(b"x")
    os.chmod(m / "mine", 0o644)
    result = as_nobody(HOLEFS, "status", "--json", str(m.path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["inodes_used"] == 2
    result = as_nobody(HOLEFS, "status", str(m / "mine"))
    assert result.returncode == 0 and "ram" in result.stdout


def test_status_outside_holefs(tmp_path):
    result = run_holefs("status", str(tmp_path), check=False)
    assert result.returncode == 1
    assert "not on a holefs mount" in result.stderr


def test_mount_refuses_to_run_without_the_shim(tmp_path):
    """With pyfuse3 loaded first, fallocate and lseek would be lost: refuse."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    code = ("import sys, pyfuse3, holefs.cli; "
            "sys.exit(holefs.cli.main(['mount', '-f', sys.argv[1]]))")
    try:
        result = subprocess.run([sys.executable, "-c", code, str(mnt)],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "shim did not engage with libfuse" in result.stderr
        assert "pyfuse3 was loaded before holefs" in result.stderr
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


@pytest.mark.parametrize("options,max_ratio,strict", [("", "1", "1"),
                                                      ("bdi_max_ratio=50", "50", "0")])
def test_the_backing_device_reads_ahead_a_request_and_dirties_as_asked(
        mount_holefs, options, max_ratio, strict):
    """Readahead of a full request; dirty pages held to FUSE's strict 1%
    unless bdi_max_ratio= says otherwise."""
    m = mount_holefs(options)
    dev = os.stat(m.path).st_dev
    bdi = f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}"

    def knobs():
        return [open(f"{bdi}/{knob}").read().strip()
                for knob in ("read_ahead_kb", "max_ratio", "strict_limit")]
    wait_for(lambda: knobs() == ["1024", max_ratio, strict], what="the bdi tuned")
    # status shows the limit on the kernel's dirty copy, in bytes where the
    # kernel tells them (Linux 6.2 on)
    cache = m.status()["page_cache"]
    assert (cache["max_ratio"], cache["strict_limit"]) == (int(max_ratio), strict == "1")
    assert (cache["max_bytes"] is None) == (kernel_version() < (6, 2))
    shown = run_holefs("status", m.path).stdout
    assert "dirty at most" in shown and f"max_ratio {max_ratio}%" in shown
