"""holefs builds and installs as a package: from its sdist, into any venv."""

import pathlib
import subprocess
import sys
import tarfile

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_sdist_builds_and_installs(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path),
                    str(REPO)],
                   check=True, capture_output=True, timeout=300)
    (sdist,) = tmp_path.glob("holefs-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.partition("/")[2] for name in tar.getnames()}
    assert {"holefs/daemon/_shim.c", "holefs/daemon/_shim.map", "holefs/_fallocate.c",
            "setup.py", "pyproject.toml"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", str(sdist)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    probe = subprocess.run(
        [venv / "bin" / "python", "-c",
         "import holefs.daemon._shim as s; print(s.__file__); print(s.libfuse()['version'])"],
        cwd=tmp_path, capture_output=True, text=True, check=True)
    where, version = probe.stdout.split()
    assert where.startswith(str(venv))
    assert version.count(".") == 2


def test_the_library_maps_no_libfuse():
    """A program that imports holefs to punch, or to read status, gets no
    interposer: libfuse stays as the program has it."""
    probe = subprocess.run(
        [sys.executable, "-c", "import holefs, holefs.status, holefs.tiers, holefs.namespace\n"
         "holefs.release\nprint(open('/proc/self/maps').read())"],
        capture_output=True, text=True, check=True)
    assert "libfuse" not in probe.stdout and "_shim" not in probe.stdout

