"""Child processes: never hand them our secrets.

A passphrase or PIN may reach this process through its environment
(``PPML_IMAGE_KEY_PASSPHRASE``, ``PPML_IMAGE_PKCS11_PIN``). Children (pip,
git, debootstrap, keytool) have no use for them, and a child's environment
is readable by anything that can read its ``/proc/PID/environ``. So every
child gets our environment without any ``PPML_IMAGE_*`` variable.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

OUR_PREFIX = "PPML_IMAGE_"


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment minus every ``PPML_IMAGE_*`` variable, plus *extra*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIX)}
    env.update(extra or {})
    return env
