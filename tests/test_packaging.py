"""The wheel carries the templates, and the tool finds them outside the checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import TESTS

ROOT = TESTS.parent


def test_wheel_ships_templates_and_works_outside_the_checkout(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path),
                    str(ROOT)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("ppml_image-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for shipped in ("ppml_image/_data/dockerfiles/base.Dockerfile.j2",
                    "ppml_image/_data/dockerfiles/describe-image.py",
                    "ppml_image/_data/manifests/python-ml.manifest.j2",
                    "ppml_image/_data/manifests/spark.manifest.j2"):
        assert shipped in names
    assert not any(name.startswith("tests/") for name in names)
    probe = ("import ppml_image.resources as r, ppml_image.images.enclave.custom as c; "
             "print(r.__file__); print(c.find_template('spark'))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path / "site", check=True,
                         capture_output=True, text=True,
                         env={"PYTHONPATH": str(tmp_path / "site"), "PATH": "/usr/bin:/bin"})
    module_path, template = out.stdout.split()
    assert module_path.startswith(str(tmp_path / "site"))
    assert template.startswith(str(tmp_path / "site" / "ppml_image" / "_data"))
