"""The holefs command's manners, as mount(8) and umount(8) users expect them."""

import os
import subprocess

from holefs.extents import CHUNK

from support import HOLEFS, daemon_log, is_mounted, run_holefs, wait_for


def test_version():
    result = run_holefs("--version")
    assert result.stdout.startswith("holefs ") and result.stdout.strip()[-1].isdigit()


def test_mount_help_shows_percent_signs():
    out = run_holefs("mount", "--help").stdout
    assert "% of RAM (default 50%)" in out and "%%" not in out


def test_a_size_that_is_not_one_is_named_as_such():
    result = run_holefs("punch", "/tmp/f", "0", "abc", check=False)
    assert result.returncode == 2
    assert "argument length: 'abc' is not a size" in result.stderr
    assert "size=" not in result.stderr


def test_umount_refuses_what_is_not_holefs(small_tmpfs):
    tmpfs = small_tmpfs("1M")
    result = run_holefs("umount", str(tmpfs), check=False)
    assert result.returncode == 1
    assert result.stderr == f"holefs: umount: {tmpfs}: not a holefs mount (it is tmpfs)\n"
    assert is_mounted(tmpfs)


def test_umount_of_nothing_says_not_mounted(tmp_path):
    result = run_holefs("umount", str(tmp_path), check=False)
    assert result.returncode == 1
    assert result.stderr == f"holefs: umount: {tmp_path}: not mounted\n"


def test_umount_of_a_busy_mount_hints_at_l(fs):
    with open(fs / "held", "w"):
        busy = run_holefs("umount", str(fs.path), check=False)
        assert busy.returncode == 1
        assert busy.stderr.startswith(f"holefs: umount: {fs.path}: ")
        assert "busy" in busy.stderr and "give -l" in busy.stderr
        assert is_mounted(fs.path)
        assert run_holefs("umount", "-l", str(fs.path)).returncode == 0
        assert not is_mounted(fs.path)


def test_status_errors_name_the_path(tmp_path):
    result = run_holefs("status", str(tmp_path / "nope"), check=False)
    assert result.stderr == f"holefs: status: {tmp_path / 'nope'}: No such file or directory\n"


def test_status_into_a_closed_pipe_is_quiet(fs):
    """A map longer than a pipe holds, cut short by head, ends in silence."""
    fd = os.open(fs / "fragments", os.O_WRONLY | os.O_CREAT)
    for i in range(0, 8000, 2):
        os.pwrite(fd, b"x", i * CHUNK)
    os.close(fd)
    result = subprocess.run(f"{HOLEFS} status {fs / 'fragments'} | head -1", shell=True,
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.startswith("size ") and result.stderr == ""


def test_repeated_o_options_add_up_and_status_shows_them(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = run_holefs("mount", str(mnt), "-o", "size=1G", "-o", f"ram=64M,spill={tmp_path}",
                        "-o", "huge=always")
    try:
        assert "option huge=always has no effect" in result.stderr
        out = run_holefs("status", str(mnt)).stdout
        assert "options size=1048576k,ram=65536k,nr_inodes=" in out
        assert f"spill={tmp_path}" in out
    finally:
        run_holefs("umount", str(mnt), check=False)


def mount_flags(path):
    with open("/proc/mounts") as f:
        return set(next(line.split()[3] for line in f if line.split()[1] == str(path)).split(","))


def test_nosuid_nodev_unless_asked_otherwise(tmp_path):
    """holefs mount is nosuid,nodev, as libfuse makes it; mount(8) and fstab
    add suid,dev, as for any filesystem, unless the line says nosuid,nodev
    (as the README's does)."""
    mounts = {"holefs": (tmp_path / "holefs", "nosuid,nodev", []),
              "fstab, as in the README": (tmp_path / "fstab", "nosuid,nodev",
                                          ["-o", "size=1M,nosuid,nodev"]),
              "fstab, without": (tmp_path / "bare", "suid,dev", ["-o", "size=1M"])}
    try:
        for kind, (mnt, want, options) in mounts.items():
            mnt.mkdir()
            if kind == "holefs":
                run_holefs("mount", str(mnt), "-o", "size=1M")
            else:
                subprocess.run(["mount", "-t", "fuse.holefs", "none", str(mnt), *options],
                               check=True, timeout=30)
            safe = {"nosuid", "nodev"} & mount_flags(mnt)
            assert safe == ({"nosuid", "nodev"} if want == "nosuid,nodev" else set()), kind
    finally:
        for mnt, _, _ in mounts.values():
            run_holefs("umount", str(mnt), check=False)


def test_a_background_daemon_logs_somewhere(mount_holefs):
    m = mount_holefs("size=1M,debug")
    pid = m.pid
    dd = subprocess.run(["dd", "if=/dev/zero", f"of={m / 'f'}", "bs=64k", "count=32"],
                        capture_output=True, text=True)
    assert "No space left on device" in dd.stderr
    wait_for(lambda: "write refused: inode" in daemon_log(pid, m.path), what="the log")
    assert "DEBUG write fh=" in daemon_log(pid, m.path)


def test_remount_is_documented():
    assert "change the size, RAM, inodes or flags of a running mount" in \
        run_holefs("--help").stdout
    out = " ".join(run_holefs("remount", "--help").stdout.split())
    for text in ("mount -o remount,size=8G /mnt/pool", "systemctl reload holefs@mnt-pool",
                 "returns once RAM fits", "Only root and the user who mounted it",
                 "mount -o remount,ro /mnt/pool", "is refused while a file is open for writing"):
        assert text in out
