"""Builds the daemon's C shim against the libfuse 3 that pkg-config finds,
and the library's fallocate(2), which needs nothing but libc."""

import shlex
import subprocess

from setuptools import Extension, setup


def pkg_config(flag):
    try:
        out = subprocess.run(["pkg-config", flag, "fuse3"], check=True,
                             capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"holefs needs pkg-config and libfuse 3's headers "
                         f"(Debian: apt-get install pkg-config libfuse3-dev): {e}") from None
    return shlex.split(out)


setup(ext_modules=[
    Extension("holefs._fallocate", sources=["holefs/_fallocate.c"]),
    Extension(
        "holefs.daemon._shim",
        sources=["holefs/daemon/_shim.c"],
        depends=["holefs/daemon/_shim.map"],  # which also puts it in the sdist
        extra_compile_args=pkg_config("--cflags"),
        # The version script exports the interposers as fuse_session_new@FUSE_3.0
        # and fuse_session_new_versioned@FUSE_3.17; see holefs/daemon/_shim.c.
        extra_link_args=[*pkg_config("--libs"), "-ldl",
                         "-Wl,--version-script=holefs/daemon/_shim.map"],
    ),
])
