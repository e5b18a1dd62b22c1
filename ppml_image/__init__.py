"""ppml-image: build, sign, measure and verify Gramine SGX images for ML workloads.

Rooms, imports pointing down only: ``cli`` -> ``images``, ``spark``, ``k8s``
-> ``sgx`` -> the shared modules at this level (``errors``, ``_fs``,
``_signals``, ``_proc``, ``_dates``, ``defaults``, ``resources``), which
import no room. ``testing`` (stand-ins for tests and demos) may import any room.
"""

__version__ = "0.1.0"
