"""The seam between holefs and libfuse: what INIT settles, on every libfuse.

libfuse's defaults differ between 3.14 and 3.17, and between hosts: root
with CAP_SYS_RESOURCE (an ordinary host) gets spliced receive, root here
does not.  These tests hold holefs to what it sets itself.
"""

import hashlib
import os
import subprocess

import pytest

from conftest import MiB, as_nobody, drop_page_cache, run_holefs
from holefs.mount import shim_not_engaged

PIPE_MAX_SIZE = "/proc/sys/fs/pipe-max-size"


def test_init_settles_the_capabilities_holefs_relies_on(fs):
    status = fs.status()
    assert status["capabilities"] == {
        "splice_read": False,
        "splice_write": False,
        "splice_move": False,
        "auto_inval_data": False,
        "writeback_cache": False,
        "handle_killpriv": False,
        "handle_killpriv_v2": False,
        "atomic_o_trunc": True,
    }
    built_against = subprocess.run(["pkg-config", "--modversion", "fuse3"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    assert status["libfuse"] == built_against


@pytest.fixture
def splice_receive_available():
    """Let any process size a pipe to 2 MiB, as CAP_SYS_RESOURCE does.

    libfuse then receives by splice unless INIT says otherwise: the path
    that root takes on an ordinary host.
    """
    with open(PIPE_MAX_SIZE) as f:
        saved = f.read()
    with open(PIPE_MAX_SIZE, "w") as f:
        f.write(str(2 * MiB))
    yield
    with open(PIPE_MAX_SIZE, "w") as f:
        f.write(saved)


def test_big_writes_when_libfuse_could_splice(splice_receive_available, mount_holefs, tmp_path):
    m = mount_holefs("size=512M")
    pid = m.pid
    dd = subprocess.run(["dd", "if=/dev/zero", f"of={m / 'zeros'}", "bs=1M", "count=256"],
                        capture_output=True, text=True, timeout=120)
    assert dd.returncode == 0, dd.stderr
    assert os.stat(m / "zeros").st_size == 256 * MiB
    assert os.stat(m / "zeros").st_blocks * 512 == 256 * MiB
    assert subprocess.run(["cmp", "-n", str(256 * MiB), "/dev/zero", str(m / "zeros")],
                          capture_output=True).returncode == 0

    pattern = tmp_path / "pattern"
    pattern.write_bytes(os.urandom(32 * MiB))
    dd = subprocess.run(["dd", f"if={pattern}", f"of={m / 'pattern'}", "bs=1M"],
                        capture_output=True, text=True, timeout=120)
    assert dd.returncode == 0, dd.stderr
    drop_page_cache()
    digest = hashlib.sha256((m / "pattern").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(pattern.read_bytes()).hexdigest()
    assert m.pid == pid and m.status()["capabilities"]["splice_read"] is False


@pytest.mark.parametrize("kind", ["holefs", "tmpfs"])
def test_a_write_by_another_user_clears_setuid_and_setgid(kind, mount_holefs, small_tmpfs):
    """With handle_killpriv off, the kernel clears the bits, as on tmpfs."""
    directory = mount_holefs("size=16M,allow_other").path if kind == "holefs" \
        else small_tmpfs("16M")
    path = directory / "setid"
    path.write_bytes(b"#!/bin/sh\n")
    path.chmod(0o6777)
    result = as_nobody("dd", f"of={path}", "oflag=append", "conv=notrunc,nocreat", "status=none",
                       input="exit 0\n")
    assert result.returncode == 0, result.stderr
    assert path.read_bytes() == b"#!/bin/sh\nexit 0\n"
    assert os.stat(path).st_mode & 0o7777 == 0o0777


def test_status_names_the_libfuse_it_runs_on(fs):
    out = run_holefs("status", str(fs.path)).stdout
    assert f"libfuse {fs.status()['libfuse']}" in out


def test_a_shim_that_did_not_engage_names_libfuse_and_the_entry_points():
    libfuse = {"version": "3.14.0", "entry_points": {
        "fuse_session_new@FUSE_3.0": True, "fuse_session_new_versioned@FUSE_3.17": False}}
    assert shim_not_engaged(libfuse, pyfuse3_first=False) == (
        "the C shim did not engage with libfuse 3.14.0: pyfuse3 called neither "
        "fuse_session_new@FUSE_3.0 nor fuse_session_new_versioned@FUSE_3.17 "
        "(this libfuse has no fuse_session_new_versioned@FUSE_3.17); "
        "without it there is no fallocate or SEEK_HOLE")
    assert "pyfuse3 was loaded before holefs" in shim_not_engaged(libfuse, pyfuse3_first=True)
