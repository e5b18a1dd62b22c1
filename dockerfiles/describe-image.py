"""Runs inside the base image at build time: writes /etc/ppml-image/base.json.

The JSON tells ppml-image (and people) where Gramine's files are and what the
image's Python answers for the manifest's python.* helpers (its sysconfig,
each interpreter name's sys.path, and which of those paths exist and are
folders here), so that building a custom image never guesses from the host.
"""

import importlib.metadata as md
import json
import subprocess
import sys

import python_snapshot  # beside this script: ppml_image/sgx/manifest/python_snapshot.py

profile, source, pkglibdir = sys.argv[1:4]
try:
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version}\n"],
                         capture_output=True, text=True, check=True).stdout
    packages = dict(line.split(" ", 1) for line in out.splitlines() if " " in line)
except (OSError, subprocess.CalledProcessError):
    packages = {}
info = {
    "profile": profile,
    "gramine": {"source": source, "pkglibdir": pkglibdir,
                "libpal": f"{pkglibdir}/sgx/libpal.so",
                "libsysdb": f"{pkglibdir}/libsysdb.so",
                "runtimedir": f"{pkglibdir}/runtime/glibc",
                "version": packages.get("gramine", "")},
    # What the python.* template helpers answer in this image, recorded
    # here so that build-custom answers them without running anything.
    "python": python_snapshot.snapshot(),
    "python_packages": {d.metadata["Name"].lower(): d.version for d in md.distributions()},
    "os_packages": packages,
}
json.dump(info, sys.stdout, indent=2, sort_keys=True)
