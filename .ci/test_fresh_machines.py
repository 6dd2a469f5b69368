"""The README's two commands, as written, on fresh Debian 12 and 13 machines.

The README says "on a fresh Debian 12 or 13 machine, as root, from a clone
of this repository".  Each test boots such a machine (fresh_machine.py: a
minimal debootstrap root with git, under systemd-nspawn), clones this
repository's HEAD into /root/holefs, as a user would (the clone, not the
working tree: uncommitted changes are not tested), and runs the command
that the README's "Try it" or "Test it" section shows, taken from the
README in that clone.  After "Try it" it checks that the demo mount gives
memory back, which is what holefs is for.

Run as root on the host, with any pytest: this module does not import
holefs.  The first run builds the roots (about a minute each); later runs
reuse them from /var/cache/holefs-ci.
"""

import json
import os
import pathlib
import re
import shutil
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from fresh_machine import REPO, SUITES, fresh_machine  # noqa: E402

CLONE = "/root/holefs"
DEMO = "/mnt/holefs"  # where "Try it" mounts its demo
MiB = 1 << 20


def why_not():
    """The reason this host cannot boot fresh machines, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("debootstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install debootstrap systemd-container)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


def readme_command(readme, section):
    """The one code block under the README's '## {section}' heading."""
    body = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## |\Z)", readme, re.M | re.S)
    assert body, f"README has no '## {section}' section"
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", body.group(1), re.M | re.S)
    assert len(blocks) == 1, f"'## {section}' has {len(blocks)} code blocks, not one"
    return blocks[0].strip()


def tail(result, lines=60):
    return "\n".join(result.stdout.splitlines()[-lines:])


def timed_run(box, step, command, **kwargs):
    """box.run(), its duration added to box.timings under *step*."""
    start = time.monotonic()
    result = box.run(command, **kwargs)
    box.timings[step] = time.monotonic() - start
    return result


@pytest.fixture(params=SUITES)
def machine(request, capsys):
    """A fresh machine with a clone of this repository in /root/holefs."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    with fresh_machine(request.param, ro_binds={"/src": REPO}) as box:
        # Debian makes /root 0700: nothing that the README installs may
        # need other users to read the clone.
        assert box.run(["stat", "-c", "%a", "/root"]).stdout.strip() == "700"
        # The host's checkout may be another user's (a CI runner's): git
        # then refuses it, in clone and in the upload-pack that clone runs,
        # unless told it is safe.
        safe = "safe.directory=/src/.git"
        timed_run(box, "clone", ["git", "-c", safe, "clone", "--quiet",
                                 f"--upload-pack=git -c {safe} upload-pack", "/src", CLONE],
                  check=True)
        box.readme = box.run(["cat", f"{CLONE}/README.md"], check=True).stdout
        try:
            yield box
        finally:
            with capsys.disabled():
                print(f"\n{request.param}: " + ", ".join(
                    f"{step} {seconds:.1f} s" for step, seconds in box.timings.items()))


def status(box, path):
    result = box.run(["holefs", "status", "--json", path], check=True)
    return json.loads(result.stdout)


def blocks(box, path):
    return int(box.run(["stat", "-c", "%b", path], check=True).stdout) * 512


def test_try_it_then_punch_gives_memory_back(machine):
    result = timed_run(machine, "try it", readme_command(machine.readme, "Try it"),
                       cwd=CLONE, timeout=1800)
    assert result.returncode == 0, f"'Try it' failed:\n{tail(result)}"
    mounts = machine.run(["cat", "/proc/mounts"], check=True).stdout
    assert f" {DEMO} fuse.holefs " in mounts, f"'Try it' left no holefs on {DEMO}:\n{tail(result)}"

    f = f"{DEMO}/random"
    machine.run(f"head -c 64M /dev/urandom > {f} && sync {f}", check=True)
    second_half = machine.run(f"tail -c 32M {f} | sha256sum", check=True).stdout
    ram, disk = status(machine, DEMO)["ram_allocated"], blocks(machine, f)
    assert ram >= 64 * MiB and disk >= 64 * MiB, (ram, disk)

    machine.run(["holefs", "punch", f, "0", "32M"], check=True)
    freed_ram = ram - status(machine, DEMO)["ram_allocated"]
    freed_disk = disk - blocks(machine, f)
    assert 31 * MiB <= freed_ram <= 33 * MiB, f"punching 32 MiB freed {freed_ram} bytes of RAM"
    assert freed_disk == 32 * MiB, f"punching 32 MiB freed {freed_disk} bytes of st_blocks"
    machine.run(["cmp", "-n", str(32 * MiB), f, "/dev/zero"], check=True)
    assert machine.run(f"tail -c 32M {f} | sha256sum").stdout == second_half

    machine.run(["holefs", "umount", DEMO], check=True)
    mounts = machine.run(["cat", "/proc/mounts"], check=True).stdout
    assert f" {DEMO} " not in mounts


def test_test_it(machine, capsys):
    result = timed_run(machine, "test it", readme_command(machine.readme, "Test it"),
                       cwd=CLONE, timeout=3600)
    assert result.returncode == 0, f"'Test it' failed:\n{tail(result, 120)}"
    summary = re.findall(r"^(?:SKIPPED|XFAIL) .*|^=+ .*\d+ passed.*", result.stdout, re.M)
    assert summary and "passed" in summary[-1], tail(result)
    with capsys.disabled():
        print("\n" + "\n".join(summary))
