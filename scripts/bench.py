"""`make bench`: measured speed ratios, each against a reference run in the same process.

1. MRENCLAVE of a 64 GiB non-EDMM enclave against one hashlib.sha256 call over
   the same number of bytes as its EADD records (target: ratio <= 1.5).
2. Trusted-file hashing of a generated tree against
   `find DIR -type f -print0 | xargs -0 -P$(nproc) openssl dgst -sha256`
   (target: ratio <= 1.0, i.e. no slower).
3. Signing a 256M enclave with a key inside SoftHSM2 against the same key in
   a PEM file (target: the same order of magnitude, ratio < 10). The token
   lives in a temporary folder (SOFTHSM2_CONF); the machine's tokens are
   never opened.
4. The front door, whole processes as a user runs them (issue 11.9):
   `ppml-image --help`; `ppml-image sign` of a 256M enclave (target <= 0.25 s);
   `ppml-image sign` of a 64G enclave against one hashlib.sha256 call over
   the same EADD bytes (target: ratio <= 1.4, issue 20). Bytecode is compiled once into
   a temporary PYTHONPYCACHEPREFIX first, as an installed wheel has it.
5. Attestation (issue 18): `ppml-image attest verify` of dcap-qvl's SGX sample
   quote against a record, whole process (target <= 0.3 s) and the
   verification alone (in process); `ppml-image attest policy` for every format.

`python scripts/bench.py attest` runs part 5 alone.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from ppml_image.sgx.manifest.document import finalize, parse_manifest
from ppml_image.sgx.measure.elf import load_elf
from ppml_image.sgx.measure.enclave import PAGE, build_layout, enclave_params, measure
from ppml_image.sgx.measure.tree import DiskTree
from ppml_image.sgx.sign import sign_enclave
from ppml_image.sgx.signing.choose import signer_from_option
from ppml_image.sgx.signing.hsm import Pkcs11Signer
from ppml_image.sgx.signing.signers import PemSigner

PAL = Path(__file__).resolve().parent.parent / "tests/vectors/_common/gcc_libpal.so"


def best_of(runs: int, func) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return min(times)


def _hash_once(size: int) -> float:
    records = bytes(size)  # content does not change SHA-256's speed
    return best_of(3, lambda: hashlib.sha256(records).digest())


def manifest_text(size: str, threads: int = 4) -> str:
    """The smallest manifest that Gramine's full schema (which signing runs) accepts."""
    return ('loader.entrypoint.uri = "file:/x"\nloader.entrypoint.sha256 = "' + "0" * 64 + '"\n'
            'libos.entrypoint = "/x"\nfs.mounts = []\n'
            f'sgx.enclave_size = "{size}"\nsgx.max_threads = {threads}\n')


def bench_mrenclave() -> float:
    text = manifest_text("64G")
    manifest = parse_manifest(text, "bench")
    pal = load_elf(PAL)
    params = enclave_params(manifest["sgx"], "bench")
    manifest_bytes = text.encode()
    areas = build_layout(params, manifest_bytes, pal)
    free_pages = sum(a.size for a in areas if a.desc == "free") // PAGE
    ours = best_of(3, lambda: measure(params, build_layout(params, manifest_bytes, pal), pal))
    ref = _hash_once(free_pages * 64)
    ratio = ours / ref
    print(f"MRENCLAVE 64 GiB: {free_pages:,} unmeasured EADD records "
          f"({free_pages * 64 / 1e9:.2f} GB); ours {ours:.3f} s, one sha256 call {ref:.3f} s, "
          f"ratio {ratio:.2f} (target <= 1.5)")
    return ratio


def make_tree(root: Path) -> int:
    """A tree shaped like an ML image: many small files and some large ones."""
    rng = os.urandom
    total = 0
    for folder in range(40):
        sub = root / f"pkg{folder:02}"
        sub.mkdir(parents=True)
        for index in range(100):
            size = 4096 * (1 + (index * 7919) % 16)
            (sub / f"m{index:03}.py").write_bytes(rng(size))
            total += size
    for index in range(8):
        size = 64 << 20
        (root / f"big{index}.so").write_bytes(rng(1 << 20) * 64)
        total += size
    return total


def bench_hashing() -> float:
    with tempfile.TemporaryDirectory(prefix="ppml-bench-") as tmp:
        root = Path(tmp) / "tree"
        total = make_tree(root)
        manifest = parse_manifest(
            'loader.entrypoint.uri = "file:/x"\nloader.entrypoint.sha256 = "' + "0" * 64
            + '"\nsgx.trusted_files = ["file:/tree/"]\n', "bench")
        DiskTree(Path(tmp))
        cmd = (f"find {root} -type f -print0 | xargs -0 -P{os.cpu_count()} "
               "openssl dgst -sha256 > /dev/null")
        subprocess.run(cmd, shell=True, check=True)  # warm the page cache for both
        ref = best_of(3, lambda: subprocess.run(cmd, shell=True, check=True))
        ours = best_of(3, lambda: finalize(manifest, DiskTree(Path(tmp)), "bench"))
        files = sum(1 for _ in root.rglob("*") if _.is_file())
    ratio = ours / ref
    print(f"trusted files: {files} files, {total / 1e6:.0f} MB; ours {ours:.3f} s "
          f"({total / ours / 1e6:.0f} MB/s), find|xargs -P{os.cpu_count()} openssl "
          f"{ref:.3f} s ({total / ref / 1e6:.0f} MB/s), ratio {ratio:.2f} (target <= 1.0)")
    return ratio


SOFTHSM_MODULES = ("/usr/lib/softhsm/libsofthsm2.so",
                   "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so")


def _softhsm_token(root: Path, key: rsa.RSAPrivateKey) -> str:
    """A temporary SoftHSM2 token holding *key*; returns the key's URI."""
    module = next((m for m in SOFTHSM_MODULES if os.path.exists(m)), None)
    if module is None:
        raise SystemExit("SoftHSM2 is missing: run scripts/ensure-softhsm.sh (make bench does)")
    (root / "tokens").mkdir(mode=0o700)
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {root / 'tokens'}\nobjectstore.backend = file\n"
                    "log.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # before the module is loaded in this process
    pin = os.urandom(8).hex()  # bench data, like a test PIN
    pin_file = root / "pin"
    pin_file.write_text(pin)
    p8 = root / "key.p8"
    fd = os.open(p8, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    run = {"check": True, "capture_output": True}
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench",
                    "--so-pin", pin, "--pin", pin], **run)  # type: ignore[call-overload]
    subprocess.run(["softhsm2-util", "--import", str(p8), "--token", "bench", "--label", "key",
                    "--id", "01", "--pin", pin], **run)  # type: ignore[call-overload]
    p8.unlink()
    return f"pkcs11:token=bench;object=key?module-path={module}&pin-source=file:{pin_file}"


def bench_hsm_signing() -> float:
    text = manifest_text("256M")
    pal = load_elf(PAL)
    key = rsa.generate_private_key(public_exponent=3, key_size=3072)
    with tempfile.TemporaryDirectory(prefix="ppml-bench-hsm-") as tmp:
        uri = _softhsm_token(Path(tmp), key)
        start = time.perf_counter()
        token = signer_from_option(uri)
        opened = time.perf_counter() - start
        pem = PemSigner(key, "bench.pem")
        with token:
            def sign_with(signer: PemSigner | Pkcs11Signer) -> bytes:
                signed = sign_enclave(text, pal=pal, key=signer, tree=DiskTree(Path(tmp)),
                                      date=dt.date(2025, 1, 1), name="bench")
                return signed.sigstruct.to_bytes()

            assert sign_with(pem) == sign_with(token), "token and file key differ"
            by_file, by_token, rsa_file, rsa_token = [], [], [], []
            data = bytes(256)
            for _ in range(5):  # interleaved: both see the same machine load
                by_file.append(best_of(1, lambda: sign_with(pem)))
                by_token.append(best_of(1, lambda: sign_with(token)))
                rsa_file.append(best_of(1, lambda: pem.sign(data)))
                rsa_token.append(best_of(1, lambda: token.sign(data)))
    ratio = min(by_token) / min(by_file)
    print(f"sign a 256M enclave (measure + RSA): PEM file {min(by_file) * 1e3:.1f} ms, "
          f"SoftHSM2 {min(by_token) * 1e3:.1f} ms, ratio {ratio:.2f} (target < 10); "
          f"the RSA operation alone: PEM {min(rsa_file) * 1e3:.2f} ms, SoftHSM2 "
          f"{min(rsa_token) * 1e3:.2f} ms; opening the token (load, log in, check key) "
          f"{opened * 1e3:.0f} ms")
    return ratio


def eadd_bytes(size: str, threads: int = 4) -> int:
    """The bytes of the EADD records of the unmeasured pages of a *size* enclave
    (the input of the SHA-256 pass that both benches compare `sign` with)."""
    text = manifest_text(size, threads)
    params = enclave_params(parse_manifest(text, "bench")["sgx"], "bench")
    areas = build_layout(params, text.encode(), load_elf(PAL))
    return sum(a.size for a in areas if a.desc == "free") // PAGE * 64


def _process_seconds(argv: list[str], env: dict[str, str], runs: int, *,
                     warm: bool = True) -> float:
    def once() -> None:
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    if warm:
        once()  # compiles the bytecode, warms the page cache
    return best_of(runs, once)


def bench_front_door() -> tuple[float, float]:
    """End-to-end seconds of whole ppml-image processes; returns (sign 256M, 64G ratio)."""
    from ppml_image.sgx.signing.keys import generate_key

    script = Path(sys.executable).with_name("ppml-image")
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "ppml_image"]
    with tempfile.TemporaryDirectory(prefix="ppml-bench-cli-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items()
               if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("PPML_IMAGE_")}
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        key = root / "key.pem"
        generate_key(key)
        commands = {}
        for size in ("256M", "64G"):
            manifest = root / f"{size}.manifest"
            manifest.write_text(manifest_text(size))
            commands[size] = [*cli, "sign", "-m", str(manifest), "-o",
                              str(root / f"{size}.manifest.sgx"), "--libpal", str(PAL), "-k",
                              str(key), "--date", "2025-01-01"]
        sign = {"256M": _process_seconds(commands["256M"], env, 7)}
        startup = _process_seconds([sys.executable, "-c", "pass"], env, 7)
        help_seconds = _process_seconds([*cli, "--help"], env, 15)
        # 64G and its reference interleaved, so that both see the same machine load.
        eadd = eadd_bytes("64G")
        records = bytes(eadd)
        processes, refs = [], []
        for _ in range(4):  # the 256M runs compiled the bytecode already
            processes.append(_process_seconds(commands["64G"], env, 1, warm=False))
            refs.append(best_of(1, lambda: hashlib.sha256(records).digest()))
        sign["64G"], ref = min(processes), min(refs)
    ratio = sign["64G"] / ref
    print(f"front door (whole processes, best of 7): python itself {startup:.3f} s, "
          f"ppml-image --help {help_seconds:.3f} s, sign 256M {sign['256M']:.3f} s "
          "(target <= 0.25 s)")
    print(f"sign 64G, whole process: {sign['64G']:.3f} s; one sha256 call over the same "
          f"{eadd / 1e9:.2f} GB of EADD records {ref:.3f} s; ratio {ratio:.2f} (target <= 1.4)")
    return sign["256M"], ratio


ATTESTATION = Path(__file__).resolve().parent.parent / "tests/attestation"
VECTOR_RECORD = {
    "tee": "sgx", "mr_enclave": "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb",
    "mr_signer": "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6",
    "isv_prod_id": 0, "isv_svn": 0, "attributes": "0400000000000000e700000000000000",
    "attribute_mask": "ffffffffffffffff0300000000000000", "misc_select": "00000000",
    "misc_mask": "ffffffff", "debug": False}


def bench_attest() -> float:
    """Seconds of a whole `attest verify` process (the figure with a target)."""
    import json

    from ppml_image.attest.policies import FORMATS
    from ppml_image.attest.verify import Expectation, parse_time, verify_quote
    from ppml_image.sgx.signing.record import MeasurementRecord

    script = Path(sys.executable).with_name("ppml-image")
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "ppml_image"]
    quote = ATTESTATION / "sgx_quote"
    collateral = ATTESTATION / "sgx_quote_collateral.json"
    status = "ConfigurationAndSWHardeningNeeded"
    with tempfile.TemporaryDirectory(prefix="ppml-bench-attest-") as tmp:
        root = Path(tmp)
        env = {k: v for k, v in os.environ.items()
               if k != "PYTHONDONTWRITEBYTECODE" and not k.startswith("PPML_IMAGE_")}
        env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
        record = root / "record.json"
        record.write_text(json.dumps(VECTOR_RECORD))
        verify_cmd = [*cli, "attest", "verify", str(quote), "--collateral", str(collateral),
                      "--record", str(record), "--at", "2025-06-20T00:00:00Z", "--allow-tcb",
                      status]
        whole = _process_seconds(verify_cmd, env, 15)
        phases_file = root / "phases.json"
        subprocess.run(verify_cmd, env={**env, "PPML_IMAGE_PHASES": str(phases_file)},
                       check=True, stdout=subprocess.DEVNULL)
        phases = json.loads(phases_file.read_text())["phases"]
        help_seconds = _process_seconds([*cli, "--help"], env, 15)
        policies = {fmt: _process_seconds([*cli, "attest", "policy", str(record), "--format",
                                           fmt, "--output", str(root / f"policy.{fmt}")],
                                          env, 3) for fmt in FORMATS}
    expected = Expectation.from_record(MeasurementRecord.from_json(VECTOR_RECORD))
    quote_bytes, collateral_bytes = quote.read_bytes(), collateral.read_bytes()
    at = parse_time("2025-06-20T00:00:00Z")
    verify_quote(quote_bytes, collateral_bytes, expected, at=at)  # loads dcap-qvl once
    alone = best_of(20, lambda: verify_quote(quote_bytes, collateral_bytes, expected, at=at,
                                             allow_tcb={"UpToDate", status}))
    slowest = max(policies, key=policies.__getitem__)
    print(f"attest verify (whole process, best of 15): {whole:.3f} s (target <= 0.3 s; "
          f"ppml-image --help {help_seconds:.3f} s, best of 15, on this machine now); "
          f"the verification alone (dcap-qvl chain + record checks, in process): "
          f"{alone * 1000:.2f} ms")
    print("attest verify, one whole process by phase: "
          + ", ".join(f"{name} {seconds:.3f} s" for name, seconds in phases.items()))
    print("attest policy (whole processes, best of 3): "
          + ", ".join(f"{fmt} {seconds:.3f} s" for fmt, seconds in policies.items())
          + f"; slowest {slowest}")
    return whole


def main() -> int:
    if sys.argv[1:] == ["attest"]:
        return 0 if bench_attest() <= 0.3 else 1
    mr = bench_mrenclave()
    hashing = bench_hashing()
    hsm = bench_hsm_signing()
    sign_256m, sign_64g = bench_front_door()
    attest = bench_attest()
    ok = (mr <= 1.5 and hashing <= 1.0 and hsm < 10 and sign_256m <= 0.25 and sign_64g <= 1.4
          and attest <= 0.3)
    print("within targets" if ok else "OUTSIDE TARGETS")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
