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
   (Gramine cannot be installed here): the steps of its sign that grow with
   the entries, each in a fresh process with the same interpreter start-up.
   ``Manifest.load`` parses with tomli (``tomllib`` here) and sets defaults;
   ``expand_all_trusted_files`` makes one ``TrustedFile`` per entry (its
   path through ``PurePosixPath`` and ``Path``) and asks ``is_dir()`` of it
   (``expand_directory``: a stat per entry, even with a sha256); ``dump``
   writes with ``tomli_w``; ``get_tbssigstruct`` then reads the written
   ``.manifest.sgx`` and parses it again. Left out, so the estimate stays
   low: Gramine's measuring of the enclave, and the chroot (with one, each
   path part costs Gramine two more stats).
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

# Gramine 1.9's sign, reduced to its per-entry steps (python/graminelibos:
# manifest.py's Manifest and TrustedFile, sgx_sign.py's get_tbssigstruct),
# written here as a model: parse and defaults, one TrustedFile per entry with
# its path objects and is_dir() stat, dedup by URI, tomli_w dump, and the
# second parse of the written file.
GRAMINE_ESTIMATE = """
import sys, tomllib, tomli_w
from pathlib import Path, PurePosixPath
def load(text):
    manifest = tomllib.loads(text)
    sgx = manifest.setdefault('sgx', {})
    for key, value in (('trusted_files', []), ('max_threads', 4), ('isvprodid', 0),
                       ('isvsvn', 0), ('debug', False), ('enclave_size', '256M')):
        sgx.setdefault(key, value)
    sgx['trusted_files'] = [tf if isinstance(tf, dict) else {'uri': tf}
                            for tf in sgx['trusted_files']]
    return manifest
class TrustedFile:
    def __init__(self, uri, sha256):
        if not uri.startswith('file:'):
            raise SystemExit('bad uri')
        self.uri, self.sha256 = uri, sha256
        self.realpath = Path(PurePosixPath(Path(uri[len('file:'):])))
manifest = load(Path(sys.argv[1]).read_text(encoding='utf-8'))
files = {}
for data in manifest['sgx']['trusted_files']:
    tf = TrustedFile(data.pop('uri'), data.pop('sha256', None))
    if tf.realpath.is_dir():
        raise SystemExit('a folder without a trailing slash')
    old = files.get(tf.uri)
    if old is None or old.sha256 is None:
        files[tf.uri] = tf
manifest['sgx']['trusted_files'] = [{'uri': tf.uri, 'sha256': tf.sha256}
                                    for tf in files.values()]
with open(sys.argv[2], 'w', encoding='utf-8') as out:
    out.write(tomli_w.dumps(manifest))
with open(sys.argv[2], 'rb') as written:
    load(written.read().decode('utf-8'))
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
    def sign(path: Path) -> list[str]:
        return [*_cli(), "sign", "-m", str(path), "-o", str(work / f"{path.stem}.manifest.sgx"),
                "--libpal", str(PAL), "-k", str(key), "--date", "2025-01-01",
                "--chroot", str(chroot)]

    warm = work / "warm.manifest"  # compiles the bytecode once, as a wheel has it
    write_manifest(warm, 1)
    whole_process(sign(warm), env)
    python = [sys.executable, "-c"]
    return {
        "ppml-image sign": whole_process(sign(manifest), env),
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
