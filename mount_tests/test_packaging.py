"""holefs builds and installs as a package: from its sdist, into any venv."""

import pathlib
import subprocess
import sys
import tarfile

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_the_sdist_builds_and_installs(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    (sdist,) = tmp_path.glob("holefs-*.tar.gz")
    with tarfile.open(sdist) as tar:
        names = {name.partition("/")[2] for name in tar.getnames()}
    assert {"holefs/_shim.c", "holefs/_shim.map", "setup.py", "pyproject.toml"} <= names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([venv / "bin" / "pip", "install", "-q", "--no-deps", str(sdist)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr
    probe = subprocess.run(
        [venv / "bin" / "python", "-c",
         "import holefs._shim as s; print(s.__file__); print(s.libfuse()['version'])"],
        cwd=tmp_path, capture_output=True, text=True, check=True)
    where, version = probe.stdout.split()
    assert where.startswith(str(venv))
    assert version.count(".") == 2
