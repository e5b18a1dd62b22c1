"""Runs inside the base image at build time: writes /etc/ppml-image/base.json.

The JSON tells ppml-image (and people) where Gramine's files are and what the
image's Python answers for the manifest's python.* helpers, so that building
a custom image never guesses from the host.
"""

import importlib.metadata as md
import json
import os
import subprocess
import sys
import sysconfig

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
    "python": {"paths": sysconfig.get_paths(), "sys_path": [p for p in sys.path[1:] if p],
               "executable": os.path.realpath(sys.executable),
               "config_vars": {k: v for k, v in sysconfig.get_config_vars().items()
                               if isinstance(v, (str, int, float))},
               "implementation": {"name": sys.implementation.name,
                                  "cache_tag": sys.implementation.cache_tag}},
    "python_packages": {d.metadata["Name"].lower(): d.version for d in md.distributions()},
    "os_packages": packages,
}
json.dump(info, sys.stdout, indent=2, sort_keys=True)
