"""libfuse's passthrough_hp, the peer column, built from Debian's fuse3 sources.

passthrough_hp is libfuse's own C++ example of a fast FUSE daemon: what a
daemon written in C against the same library can do for the same
requests.  It is built at bench time from the source package of the
installed libfuse3-dev, so it links against the library holefs's shim
uses, and the binary is cached.  Its sources never enter the repository.
"""

import hashlib
import pathlib
import re
import sys
import tempfile

from .tools import cache_dir, run

APT = pathlib.Path("/etc/apt")
# libfuse's configure finds these on Linux, but 3.14's build hands its
# config header to C code alone, so passthrough_hp.cc as libfuse builds it
# has none: touch, fallocate and xattrs fail with EOPNOTSUPP, and writes
# skip the GETXATTR of security.capability that holefs answers for each.
FEATURES = ("-DHAVE_UTIMENSAT", "-DHAVE_POSIX_FALLOCATE", "-DHAVE_SETXATTR")
COMPILER = ("g++", "-std=c++17", "-O2", *FEATURES)


class PeerUnavailable(Exception):
    """passthrough_hp cannot be had; the message says why."""


def installed_source():
    """The source package and version that the installed libfuse3-dev was built from."""
    package, version = run(["dpkg-query", "-W", "-f=${source:Package} ${source:Version}",
                            "libfuse3-dev"]).split()
    return package, version


def deb_src(text):
    """A host apt source file asking for source packages: same mirrors, suites and keys."""
    text = re.sub(r"^Types:.*$", "Types: deb-src", text, flags=re.M)
    return re.sub(r"^deb(?=\s)", "deb-src", text, flags=re.M)


def private_apt(tmp):
    """apt-get options that read sources and write indexes under *tmp* alone.

    The host's apt configuration has no deb-src entries and stays as it is:
    its source files are copied, turned to deb-src, and the indexes go to
    a lists directory of our own.
    """
    sources = tmp / "sources"
    sources.mkdir()
    hosts = [APT / "sources.list", *sorted((APT / "sources.list.d").glob("*.list")),
             *sorted((APT / "sources.list.d").glob("*.sources"))]
    for i, path in enumerate(p for p in hosts if p.is_file()):
        (sources / f"{i}-{path.name}").write_text(deb_src(path.read_text()))
    (tmp / "lists" / "partial").mkdir(parents=True)
    return ["-q", "-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={sources}",
            "-o", f"Dir::State::Lists={tmp / 'lists'}", "-o", f"Dir::Cache={tmp / 'cache'}",
            "-o", "APT::Sandbox::User=root"]


def unpacked_sources(package, version, tmp):
    """Debian's *package* at *version*, downloaded and unpacked with Debian's patches."""
    apt = private_apt(tmp)
    run(["apt-get", *apt, "update"], timeout=600)
    run(["apt-get", *apt, "source", "--download-only", f"{package}={version}"],
        timeout=600, cwd=tmp)
    run(["dpkg-source", "-x", next(tmp.glob("*.dsc")), tmp / "src"])
    return tmp / "src"


def compile_example(example, output):
    """passthrough_hp.cc (with its vendored cxxopts.hpp) against the installed libfuse."""
    fuse = run(["pkg-config", "--cflags", "--libs", "fuse3"]).split()
    run([*COMPILER, "-o", output, example / "passthrough_hp.cc", *fuse, "-pthread"])


def binary():
    """The cached passthrough_hp for the installed libfuse, built on first use.

    Named by the Debian version and the compiler flags, so that either
    changing brings a fresh build.
    """
    try:
        package, version = installed_source()
    except RuntimeError as e:
        raise PeerUnavailable(f"no libfuse3-dev to build passthrough_hp against: {e}") from None
    flags = hashlib.sha256(repr(COMPILER).encode()).hexdigest()[:8]
    path = cache_dir() / f"passthrough_hp-{version}-{flags}"
    if path.exists():
        return path
    print(f"building {path} from Debian's {package} {version}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        partial = pathlib.Path(tmp, "passthrough_hp")
        try:
            compile_example(unpacked_sources(package, version, pathlib.Path(tmp)) / "example",
                            partial)
        except (RuntimeError, StopIteration, OSError) as e:
            raise PeerUnavailable(
                f"cannot build passthrough_hp from {package} {version}: {e}") from None
        partial.rename(path)
    return path
