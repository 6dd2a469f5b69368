"""The holefs command's manners, as mount(8) and umount(8) users expect them."""

import os
import subprocess

from conftest import HOLEFS, is_mounted, run_holefs
from holefs.extents import CHUNK


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
