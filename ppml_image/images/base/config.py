"""The typed configuration of ``build-base``: a TOML file with documented defaults.

``ppml-image.toml``::

    [base]
    tag = "ppml-image/base:latest"
    profile = "full"                  # "full" (Spark + JDK) or "slim"
    os_image = "debian:bookworm"      # see `ppml-image bootstrap-os` when offline
    gramine_source = "apt"            # "apt", "deb-dir" or "tree"
    gramine_path = ""                 # folder of .deb files, or an install tree
    debian_mirror = ""                # e.g. a snapshot: "http://snapshot.debian.org/archive/debian/20250101T000000Z"

Command-line flags override the file; unknown keys are errors (typos).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppml_image._fs import MiB, read_capped
from ppml_image.errors import UsageError
from ppml_image.images.base import gramine_install
from ppml_image.images.base.lock import check_mirror
from ppml_image.images.engine.reference import check_image, check_tag

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_CONFIG_FILE = MiB  # a few lines of TOML
PROFILES = ("full", "slim")
GRAMINE_SOURCES = ("apt", "deb-dir", "tree")

# The ML stack, pinned so that two builds of the same config are the same.
DEFAULT_PYTHON_PACKAGES = [
    "lightgbm==4.7.0",
    "scikit-learn==1.9.1",
    "numpy==2.4.6",
    "pandas==3.1.1",
    "pyarrow==26.0.1",
]
DEFAULT_SPARK_PACKAGES = ["pyspark==4.3.0"]


@dataclass
class BaseConfig:
    """Everything ``build-base`` needs to know; see the module docstring."""

    tag: str = "ppml-image/base:latest"
    profile: str = "full"
    os_image: str = "debian:bookworm"
    gramine_source: str = "apt"
    gramine_path: str = ""
    # Gramine's package repository suite and Intel's SGX repository suite.
    gramine_apt_suite: str = "bookworm"
    intel_sgx_apt_suite: str = "jammy"
    python_version: str = "3.11"
    wheel_platform: str = "manylinux_2_28_x86_64"
    python_packages: list[str] = field(default_factory=lambda: list(DEFAULT_PYTHON_PACKAGES))
    spark_packages: list[str] = field(default_factory=lambda: list(DEFAULT_SPARK_PACKAGES))
    jdk_package: str = "openjdk-17-jdk-headless"
    extra_apt_packages: list[str] = field(default_factory=list)
    # A Debian mirror for the image's apt sources and for bootstrap-os: a
    # snapshot mirror keeps old versions, so that a lock can be built again.
    debian_mirror: str = ""
    # A CA bundle (PEM) trusted inside the build, for HTTPS mirrors behind a
    # corporate proxy. Certificates are public: nothing secret goes in.
    ca_bundle: str = ""
    # Port of the host-only wheel server used during builds: part of the pip
    # steps' text, so it stays fixed (each build listens on a loopback
    # address of its own, see fileserver.py).
    wheel_server_port: int = 38917
    version: str = ""

    def validate(self) -> None:
        check_tag(self.tag, "tag")
        check_image(self.os_image, "os_image")
        if self.profile not in PROFILES:
            raise UsageError(f"profile {self.profile!r}: choose one of {', '.join(PROFILES)}")
        if self.gramine_source not in GRAMINE_SOURCES:
            raise UsageError(f"gramine_source {self.gramine_source!r}: choose one of "
                             f"{', '.join(GRAMINE_SOURCES)}")
        if self.gramine_source != "apt" and not self.gramine_path:
            raise UsageError(f"gramine_source {self.gramine_source!r} needs --gramine-path")
        if self.gramine_path and not Path(self.gramine_path).is_dir():
            raise UsageError(f"{self.gramine_path}: Gramine folder does not exist")
        if self.gramine_source == "deb-dir" and not list(Path(self.gramine_path).glob("*.deb")):
            raise UsageError(f"{self.gramine_path}: no .deb files in the Gramine folder")
        if self.gramine_source == "tree":
            gramine_install.check_tree(Path(self.gramine_path))
        elif self.gramine_source == "deb-dir":
            gramine_install.check_debs(Path(self.gramine_path))
        if self.debian_mirror:
            check_mirror(self.debian_mirror, "[base] debian_mirror")
        port = self.wheel_server_port
        if type(port) is not int or not 1 <= port <= 65535:
            raise UsageError(f"[base] wheel_server_port {port!r}: a TCP port, 1 to 65535")
        if self.ca_bundle and not Path(self.ca_bundle).is_file():
            raise UsageError(f"{self.ca_bundle}: CA bundle not found")

    @property
    def with_spark(self) -> bool:
        return self.profile == "full"


def load_config(path: Path | None, overrides: dict[str, Any]) -> BaseConfig:
    """Defaults, then the ``[base]`` table of *path* (if given), then *overrides*."""
    values: dict[str, Any] = {}
    if path is not None:
        raw = read_capped(path, MAX_CONFIG_FILE, "config file", UsageError)
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise UsageError(f"{path}: config file is not UTF-8 text") from None
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path}: invalid TOML: {exc}") from None
        values.update(data.get("base", {}))
        unknown_tables = set(data) - {"base"}
        if unknown_tables:
            raise UsageError(f"{path}: unknown table(s): {', '.join(sorted(unknown_tables))}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in dataclasses.fields(BaseConfig)}
    unknown = set(values) - known
    if unknown:
        raise UsageError(f"{path or 'config'}: unknown key(s) in [base]: "
                         f"{', '.join(sorted(unknown))}")
    config = BaseConfig(**values)
    config.validate()
    return config
