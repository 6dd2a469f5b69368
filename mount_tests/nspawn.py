"""A systemd booted in systemd-nspawn, driven from the host through nsenter.

The systemd tests boot the host's own /usr this way; CI's fresh machines
(.ci/fresh_machine.py) boot a debootstrapped root.
"""

import os
import pathlib
import signal
import subprocess
import time

ROOT_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8", "HOME": "/root", "USER": "root", "LOGNAME": "root",
            "SHELL": "/bin/bash"}
"""A root login's environment, for commands run inside."""


def find_init(nspawn_pid):
    """PID (on the host) of the machine's systemd, a child of nspawn."""
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, tail = stat.read_text().rpartition(")")
        except OSError:
            continue
        if head.partition("(")[2] == "systemd" and int(tail.split()[1]) == nspawn_pid:
            return int(stat.parent.name)
    return None


class BootedSystem:
    """The systemd that a systemd-nspawn process boots, and its namespaces.

    *nspawn* is the Popen of `systemd-nspawn --boot`, whose output goes to
    the file *console*.
    """

    def __init__(self, name, nspawn, console):
        self.name = name
        self.nspawn = nspawn
        self.console = console
        self.pid1 = None

    def console_tail(self, chars=4000):
        return self.console.read_text(errors="replace")[-chars:]

    def enter(self, *cmd, **kwargs):
        """subprocess.run(*cmd*) in all of the machine's namespaces."""
        return subprocess.run(["nsenter", "-t", str(self.pid1), "-a", "--", *cmd],
                              env=ROOT_ENV, **kwargs)

    def boot(self, timeout=120):
        """Wait for nspawn's child systemd, then for the boot to finish."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.nspawn.poll() is not None:
                raise AssertionError(f"systemd-nspawn exited:\n{self.console_tail()}")
            self.pid1 = self.pid1 or find_init(self.nspawn.pid)
            if self.pid1:
                state = self.enter("systemctl", "is-system-running", "--wait",
                                   capture_output=True, text=True, timeout=timeout).stdout
                if state.strip() in ("running", "degraded"):
                    return
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not boot:\n{self.console_tail()}")

    def shut_down(self):
        """Power off; if that hangs, killing PID 1 ends the whole PID namespace."""
        if self.nspawn.poll() is None:
            if self.pid1:
                self.enter("systemctl", "poweroff", "--no-block", capture_output=True,
                           timeout=30)
            else:
                self.nspawn.terminate()
        try:
            self.nspawn.wait(60)
        except subprocess.TimeoutExpired:
            if self.pid1:
                os.kill(self.pid1, signal.SIGKILL)
            try:
                self.nspawn.wait(30)
            except subprocess.TimeoutExpired:
                self.nspawn.kill()
                self.nspawn.wait()
