"""`make bench` (trusted entries): ``sign`` of a manifest listing N trusted files.

Issue 17 §3: an attacker's image whose manifest lists 1,000,000 trusted files
must not cost the verifier more than Gramine's own ``gramine-sgx-sign`` would
on the same manifest. This script writes, in a temporary folder, a finalized
manifest (every entry has ``uri`` and ``sha256``, as in a ``.manifest.sgx``)
with N entries (``--entries``, default 1,000,000) and times:

1. ``ppml-image sign --chroot FOLDERS`` as a whole process: wall time, peak
   RSS (``wait4``) and the phases it reports (``PPML_IMAGE_PHASES``). The
   entries carry their sha256, so no file is read: like Gramine, a given
   hash is kept, and the files need not exist (the chroot holds only
   their folders).
2. An *estimate* of Gramine 1.9's ``gramine-sgx-sign`` on the same manifest
   (Gramine cannot be installed here): the steps it performs that grow with
   the entries, each timed in a fresh process -- parsing with
   ``tomllib`` (tomli, which Gramine uses), building one trusted-file object
   per entry, and writing the ``.manifest.sgx`` with ``tomli_w`` -- plus the
   same interpreter start-up. Gramine's own measuring of the enclave is
   not counted (it only adds to Gramine's side), so the estimate is low.
3. The parse alone (``tomllib.loads``), for scale.

``--json`` prints one JSON document instead of the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_commands import PAL, Run, _cli, _env, whole_process

DEFAULT_ENTRIES = 1_000_000

# Gramine 1.9's sign, reduced to its per-entry steps: tomli parse, one
# TrustedFile per entry (uri checked, sha256 kept), tomli_w dump.
GRAMINE_ESTIMATE = """
import sys, tomllib, tomli_w
from pathlib import Path
class TrustedFile:
    def __init__(self, uri, sha256):
        if not uri.startswith('file:'):
            raise SystemExit('bad uri')
        self.uri, self.realpath, self.sha256 = uri, Path(uri[len('file:'):]), sha256
    def to_dict(self):
        return {'uri': self.uri, 'sha256': self.sha256}
manifest = tomllib.loads(Path(sys.argv[1]).read_text())
files = [TrustedFile(tf['uri'], tf['sha256']) for tf in manifest['sgx']['trusted_files']]
manifest['sgx']['trusted_files'] = [tf.to_dict() for tf in files]
Path(sys.argv[2]).write_text(tomli_w.dumps(manifest))
"""

PARSE_ONLY = "import sys, tomllib; tomllib.loads(open(sys.argv[1]).read())"


def write_manifest(path: Path, entries: int) -> None:
    """A finalized manifest with *entries* trusted files, written in one pass."""
    digest = "ab" * 32
    with path.open("w") as out:
        out.write('loader.entrypoint.uri = "file:/app/main"\n'
                  f'loader.entrypoint.sha256 = "{digest}"\n'
                  'libos.entrypoint = "/app/main"\nfs.mounts = []\n'
                  'sgx.enclave_size = "256M"\nsgx.max_threads = 4\n\n')
        for i in range(entries):
            # Three folder levels: no folder holds more than 1,000 names.
            out.write(f'[[sgx.trusted_files]]\nuri = "file:/app/{i // 1_000_000}/'
                      f'{i // 1000 % 1000}/{i % 1000}.py"\nsha256 = "{digest}"\n\n')


def bench(entries: int, work: Path, key: Path) -> dict[str, Run]:
    env = _env(work)
    manifest = work / "entries.manifest"
    write_manifest(manifest, entries)
    chroot = work / "chroot"
    for folder in range((entries + 999) // 1000):  # the files need not exist, their folders do
        (chroot / f"app/{folder // 1000}/{folder % 1000}").mkdir(parents=True)
    sign = [*_cli(), "sign", "-m", str(manifest), "-o", str(work / "out.manifest.sgx"),
            "--libpal", str(PAL), "-k", str(key), "--date", "2025-01-01",
            "--chroot", str(chroot)]
    python = [sys.executable, "-c"]
    return {
        "ppml-image sign": whole_process(sign, env),
        "Gramine 1.9 sign (estimate)": whole_process(
            [*python, GRAMINE_ESTIMATE, str(manifest), str(work / "gramine.sgx")], env),
        "tomllib.loads alone": whole_process([*python, PARSE_ONLY, str(manifest)], env),
    }


def _key(work: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    path = work / "key.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=DEFAULT_ENTRIES)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ppml-bench-entries-") as tmp:
        work = Path(tmp)
        runs = bench(args.entries, work, _key(work))
    if args.json:
        print(json.dumps({"entries": args.entries,
                          "runs": {k: vars(v) for k, v in runs.items()}}, indent=1))
        return
    print(f"{args.entries:,} trusted entries (uri + sha256)")
    for name, run in runs.items():
        print(f"  {name:<30} {run.seconds:8.2f} s {run.max_rss_mb:8.1f} MB")
        for phase, seconds in run.phases.items():
            print(f"      {phase:<40} {seconds:8.2f} s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
