#!/usr/bin/env python3
"""Fresh Debian machines, booted with systemd-nspawn, for testing the README.

The README promises that its commands work on a fresh Debian machine.  A
fresh machine is what this module makes: a `debootstrap --variant=minbase`
root with only what is needed to clone the repository and boot (git,
ca-certificates, systemd, dbus), so that `.ci/setup` has to install
everything else itself.  The root is built once per suite and kept as a
tarball in CACHE; every `fresh_machine()` extracts it into a new directory,
so no run sees what an earlier one left behind.

The machine must reach the package registries that this host reaches, so
it gets the host's apt sources (with the suite name swapped), the apt
settings that govern fetching, pip's configuration and environment (with
any local index or wheel directory bound in read-only) and the CA trust
store.  Only apt's downloaded packages are shared between runs (bound
from CACHE); pip's cache is not, as a cached pyfuse3 wheel would hide a
missing build dependency.

The machine boots with systemd as PID 1, as a real one does.  Commands run
as root through `systemd-run --scope` inside it, so they sit in a unit of
the machine's own systemd as a login session's commands do, not in a
cgroup outside it, and daemons they start outlive them.

As a command, for developers:

    python3 .ci/fresh_machine.py build [SUITE...]
    python3 .ci/fresh_machine.py shell SUITE [--src] [-- CMD...]

`shell` runs CMD (default: an interactive bash) in a fresh machine and
exits with its status; `--src` binds this repository read-only at /src.
"""

import argparse
import configparser
import contextlib
import fcntl
import hashlib
import inspect
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "mount_tests"))
from nspawn import ROOT_ENV, BootedSystem  # noqa: E402

CACHE = pathlib.Path(os.environ.get("HOLEFS_CI_CACHE", "/var/cache/holefs-ci"))
SUITES = ("bookworm", "trixie")
# A machine installed today has today's base packages; so does a root
# rebuilt this often.
MAX_AGE = 14 * 24 * 3600
# What a fresh machine has before the README's commands: enough to clone
# the repository and to boot.  dbus too, as every installed Debian has it
# (systemd recommends it; logind needs it).
PACKAGES = ("ca-certificates", "git", "systemd", "systemd-sysv", "dbus")
# Host environment that decides how downloads reach the registries, and
# the terminal type for an interactive shell.
PASSED_ENV = re.compile(r"PIP_.*|(?i:(https?|ftp|no|all)_proxy)|TERM")
PIP_CONFIG = (pathlib.Path("/etc/pip.conf"), pathlib.Path("/etc/xdg/pip"),
              pathlib.Path("/root/.config/pip"))
# pip settings whose values may name local files or file:// indexes.
PIP_PATH_KEYS = {"index-url", "extra-index-url", "find-links", "constraint",
                 "requirement", "cert"}


def log(message):
    print(f"[fresh_machine] {message}", file=sys.stderr, flush=True)


def os_release(root="/"):
    fields = {}
    for line in pathlib.Path(root, "etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        fields[key] = value.strip('"')
    return fields


def host_sources():
    """The host's enabled apt source files, as {path: text}."""
    apt = pathlib.Path("/etc/apt")
    files = [apt / "sources.list"] + sorted((apt / "sources.list.d").glob("*.list")) \
        + sorted((apt / "sources.list.d").glob("*.sources"))
    return {f: f.read_text() for f in files if f.is_file()}


def host_mirror():
    """The host's Debian mirror: the first source that serves the host's suite."""
    codename = os_release()["VERSION_CODENAME"]
    for text in host_sources().values():
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.findall(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.findall(r"^Suites:(.*)$", stanza, re.M)
            if uris and suites and codename in suites[0].split():
                return uris[0]
            match = re.search(rf"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{codename}\s", stanza, re.M)
            if match:
                return match.group(1)
    return "http://deb.debian.org/debian"


def root_tarball(suite):
    """The cached root of *suite*, built with debootstrap if it is missing.

    The file name carries a hash of everything the build depends on (this
    function's code included), so a changed package list, mirror or recipe
    builds a new root; older ones are deleted, and so is one past MAX_AGE.
    A lock keeps two runs from building the same root at once.
    """
    mirror = host_mirror()
    recipe = repr((suite, mirror, PACKAGES)) + inspect.getsource(root_tarball)
    key = hashlib.sha256(recipe.encode()).hexdigest()[:12]
    tarball = CACHE / f"debian-{suite}-{key}.tar"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"debian-{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if tarball.exists() and time.time() - tarball.stat().st_mtime < MAX_AGE:
            return tarball
        build = pathlib.Path(tempfile.mkdtemp(prefix=f"build-{suite}-", dir=CACHE))
        try:
            start = time.monotonic()
            log(f"debootstrap {suite} from {mirror}")
            subprocess.run(["debootstrap", "--variant=minbase",
                            "--include=" + ",".join(PACKAGES), suite, build / "root", mirror],
                           check=True, stdout=subprocess.DEVNULL)
            # A fresh machine has no package lists: .ci/setup must fetch them.
            subprocess.run(["chroot", build / "root", "apt-get", "clean"], check=True)
            for lists in (build / "root/var/lib/apt/lists").glob("*_*"):
                lists.unlink()
            # Nor an identity: its machine ID is made at first boot (which
            # also applies the unit presets, as on a fresh install), and its
            # host name is the one nspawn gives it, not the build host's.
            (build / "root/etc/machine-id").write_text("")
            for identity in ("var/lib/dbus/machine-id", "etc/hostname"):
                (build / "root" / identity).unlink(missing_ok=True)
            log(f"debootstrap {suite}: {time.monotonic() - start:.0f} s")
            subprocess.run(["tar", "-C", build / "root", "--numeric-owner", "--xattrs",
                            "--xattrs-include=*", "-cf", build / "root.tar", "."], check=True)
            os.replace(build / "root.tar", tarball)
        finally:
            subprocess.run(["rm", "-rf", "--one-file-system", build], check=True)
        for old in CACHE.glob(f"debian-{suite}-*.tar"):
            if old != tarball:
                old.unlink()
    return tarball


def unowned(paths):
    """The *paths* that no Debian package owns: the machine's own settings."""
    paths = [str(p) for p in paths]
    owned = subprocess.run(["dpkg-query", "-S", *paths], capture_output=True, text=True).stdout
    owned = {line.partition(": ")[2] for line in owned.splitlines()}
    return [pathlib.Path(p) for p in paths if p not in owned]


def copy_into(root, path):
    """Copy host *path* (file or tree, symlinks resolved) to the same place in *root*."""
    target = root / path.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        shutil.copytree(path, target, dirs_exist_ok=True)
    else:
        shutil.copy2(path, target)


def pip_local_dirs():
    """Host directories that pip's configuration and PIP_* variables point into.

    A file:// index is bound with its parent, as its pages link to files
    beside it (/opt/pypi/simple/x/index.html -> ../../files/x.whl).
    """
    values = [v for k, v in os.environ.items() if k.startswith("PIP_")]
    for place in PIP_CONFIG:
        for conf in [place] if place.is_file() else sorted(place.glob("*.conf")):
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(conf)
            values += [v for s in parser.sections() for k, v in parser.items(s)
                       if k in PIP_PATH_KEYS]
    dirs = set()
    for word in " ".join(values).split():
        path = pathlib.Path(word.removeprefix("file://"))
        if not path.is_absolute() or not path.exists() or \
                any(path.is_relative_to(p) for p in (*PIP_CONFIG, "/etc/ssl")):
            continue
        dirs.add(path.parent if path.name == "simple" else path)
    return sorted(dirs)


def configure(root, suite):
    """Give *root* the host's way of reaching and trusting package registries."""
    host_codename = os_release()["VERSION_CODENAME"]
    apt = root / "etc/apt"
    (apt / "sources.list").unlink(missing_ok=True)
    for path, text in host_sources().items():
        text = re.sub(rf"\b{host_codename}\b", suite, text)
        (root / path.relative_to("/")).write_text(text)
        # Keyrings of third-party sources; the suite's own keyring is its own.
        for keyring in re.findall(r"(?:Signed-By:|signed-by=)\s*(/\S+?)\]?$", text, re.M):
            if not (root / keyring.lstrip("/")).exists():
                copy_into(root, pathlib.Path(keyring))
    # Proxies, validity checks and index targets: the Acquire settings in
    # files that no package installed (99artifact-registry and the like).
    confs = sorted(pathlib.Path("/etc/apt/apt.conf.d").iterdir()) + \
        [p for p in [pathlib.Path("/etc/apt/apt.conf")] if p.exists()]
    for conf in unowned(confs):
        if re.search(r"^\s*Acquire\b", conf.read_text(), re.M):
            copy_into(root, conf)
    for path in (*PIP_CONFIG, pathlib.Path("/usr/local/share/ca-certificates")):
        if path.exists():
            copy_into(root, path)
    # The host's bundle, not a rebuilt one: it holds every CA the host trusts.
    shutil.rmtree(root / "etc/ssl/certs")
    copy_into(root, pathlib.Path("/etc/ssl/certs"))


class Machine(BootedSystem):
    """A booted fresh machine; run() runs commands in it as root."""

    def __init__(self, suite, nspawn, console, timings):
        super().__init__(suite, nspawn, console)
        self.suite, self.timings = suite, timings
        self.env = {**ROOT_ENV,
                    **{k: v for k, v in os.environ.items() if PASSED_ENV.fullmatch(k)}}

    def run(self, command, *, cwd="/root", timeout=600, check=False, capture=True):
        """Run *command* (a shell string or an argv list) as root.

        It runs in a scope of the machine's systemd, as a login shell's
        commands do, so a daemon it starts outlives it, and with a
        login-like environment in *cwd*.  After *timeout* seconds the
        machine's systemd kills the scope.  With *capture*, stdout and
        stderr come back together in .stdout (through a file, so a daemon
        that keeps them open cannot hang us); without, they are ours.  A
        *check* failure's message ends with the command's output.
        """
        argv = ["/bin/sh", "-c", command] if isinstance(command, str) else list(command)
        cmd = ["systemd-run", "--quiet", "--scope", "--collect",
               f"--property=RuntimeMaxSec={timeout}", "--",
               "env", "-i", f"--chdir={cwd}", *(f"{k}={v}" for k, v in self.env.items()),
               *argv]
        with tempfile.TemporaryFile() as out:
            streams = dict(stdin=subprocess.DEVNULL, stdout=out, stderr=out) if capture else {}
            result = self.enter(*cmd, **streams, timeout=timeout + 60)
            out.seek(0)
            result.stdout = out.read().decode(errors="replace") if capture else None
        if check and result.returncode:
            raise AssertionError(f"in {self.suite}: {shlex.join(argv)} exited with "
                                 f"{result.returncode}:\n{(result.stdout or '')[-4000:]}")
        return result


def mounts_under(path):
    with open("/proc/self/mounts") as f:
        return [m for m in (line.split()[1] for line in f)
                if m == str(path) or m.startswith(f"{path}/")]


@contextlib.contextmanager
def fresh_machine(suite, *, ro_binds=(), workdir="/var/tmp"):
    """A booted fresh *suite* machine, taken down and deleted afterwards.

    *ro_binds* maps container paths to host paths bound read-only.
    Machine.timings tells how long finding (or building) the root,
    extracting it and booting took, in seconds.
    """
    start = time.monotonic()
    tarball = root_tarball(suite)
    timings = {"root": time.monotonic() - start}
    base = pathlib.Path(tempfile.mkdtemp(prefix=f"holefs-{suite}-", dir=workdir))
    root = base / "root"
    machine = None
    try:
        start = time.monotonic()
        root.mkdir()
        subprocess.run(["tar", "-C", root, "--numeric-owner", "--xattrs",
                        "--xattrs-include=*", "-xpf", tarball], check=True)
        configure(root, suite)
        timings["extract"] = time.monotonic() - start
        archives = CACHE / f"apt-{suite}"
        archives.mkdir(exist_ok=True)
        binds = [f"--bind={archives}:/var/cache/apt/archives"] + \
            [f"--bind-ro={d}" for d in pip_local_dirs()] + \
            [f"--bind-ro={h}:{c}" for c, h in dict(ro_binds).items()]
        cmd = ["systemd-nspawn", "--quiet", f"--directory={root}", "--boot",
               f"--machine=holefs-{suite}-{os.getpid()}", "--register=no", "--keep-unit",
               "--console=pipe", "--bind=/dev/fuse", *binds,
               "systemd.firstboot=off", "systemd.mask=systemd-firstboot.service"]
        # The test suite tunes /sys/class/bdi and /proc/sys/fs, which nspawn
        # would otherwise mount read-only.
        env = {**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "1"}
        start = time.monotonic()
        with open(base / "console.log", "wb") as console:
            machine = Machine(suite, subprocess.Popen(
                cmd, env=env, stdin=subprocess.DEVNULL, stdout=console,
                stderr=subprocess.STDOUT), base / "console.log", timings)
        machine.boot()
        timings["boot"] = time.monotonic() - start
        yield machine
    finally:
        if machine:
            machine.shut_down()
        leaked = mounts_under(base)
        if leaked:
            raise AssertionError(f"mounts left under {base}, not deleting it: {leaked}")
        subprocess.run(["rm", "-rf", "--one-file-system", base], check=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="build (or find) the cached roots")
    build.add_argument("suites", nargs="*", metavar="SUITE",
                       help=f"of {', '.join(SUITES)} (default: all)")
    shell = sub.add_parser("shell", help="run a command in a fresh machine")
    shell.add_argument("suite", metavar="SUITE", choices=SUITES,
                       help=f"{' or '.join(SUITES)}")
    shell.add_argument("--src", action="store_true",
                       help=f"bind {REPO} read-only at /src")
    shell.usage = "%(prog)s SUITE [--src] [-- CMD...]"
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    if os.geteuid() != 0:
        parser.error("must run as root")
    if args.action == "build" and not set(args.suites) <= set(SUITES):
        parser.error(f"the suites are {', '.join(SUITES)}")
    if args.action == "build":
        for suite in args.suites or SUITES:
            print(root_tarball(suite))
        return 0
    with fresh_machine(args.suite, ro_binds={"/src": REPO} if args.src else {}) as machine:
        log(f"{args.suite} up (" + ", ".join(f"{k} {v:.1f} s" for k, v in
                                             machine.timings.items()) + ")")
        command = argv[split + 1:] or ["/bin/bash", "-l"]
        return machine.run(command, cwd="/src" if args.src else "/root",
                           timeout=24 * 3600, capture=False).returncode


if __name__ == "__main__":
    sys.exit(main())
