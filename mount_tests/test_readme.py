"""The README's examples, run as written, on a mount of our own."""

import pathlib
import re
import subprocess
import sys

from support import MiB, force_unmount, is_mounted

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
EXAMPLE_MOUNT = "/mnt/pool"


def code_block(containing):
    """The README's one fenced code block that contains *containing*."""
    blocks = re.findall(r"```\w*\n(.*?)```", README.read_text(), re.S)
    found = [b for b in blocks if containing in b]
    assert len(found) == 1, f"{len(found)} README blocks contain {containing!r}"
    return found[0]


def test_the_use_example(public_dir):
    mnt = public_dir / "pool"
    script = code_block("holefs mount /mnt/pool").replace(EXAMPLE_MOUNT, str(mnt))
    try:
        result = subprocess.run(["sh", "-ex"], input=script, capture_output=True, text=True,
                                timeout=60)
    finally:
        force_unmount(mnt)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s*1048576\s+2097152\s+hole$", result.stdout, re.M), result.stdout
    assert not is_mounted(mnt)


def test_the_python_example(mount_holefs):
    m = mount_holefs("size=64M")
    data = bytes(range(256)) * (16 * 4096)
    (m / "f").write_bytes(data)
    script = code_block("import holefs").replace(EXAMPLE_MOUNT, str(m.path))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    expected = bytearray(data)
    for start, length in ((0, 4096), (MiB, MiB), (3 * MiB, 4096)):
        expected[start:start + length] = bytes(length)
    assert (m / "f").read_bytes() == expected
