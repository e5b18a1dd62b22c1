"""``build-custom`` and ``sign-image``: signed customer images.

The private key never reaches Docker. The image is built in two stages:

1. *Unsigned*: FROM the base image, the application and the rendered
   manifest. No key anywhere; tagged ``NAME:TAG-unsigned``.
2. On the host: the unsigned image's files are streamed out of the engine and
   hashed, the ``.manifest.sgx`` is written and measured, and SIGSTRUCT is
   signed in this process with ``cryptography``.
3. *Final*: FROM the unsigned image, only ``.manifest.sgx`` and ``.sig`` are
   added, with the measurement as labels.

``sign-image`` runs steps 2-3 on an existing unsigned image, so a production
key can sign, in a separate locked-down step, exactly what was built before:
the same content gives the same MRENCLAVE.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
from cryptography.hazmat.primitives.asymmetric import rsa

from ppml_image.errors import UsageError
from ppml_image.images import engine, imagefs, wheelhouse
from ppml_image.images.base import LABEL_PREFIX, base_info, get_base_image
from ppml_image.resources import data_dir
from ppml_image.sgx import manifest as mf
from ppml_image.sgx.elf import parse_elf
from ppml_image.sgx.keys import load_signing_key
from ppml_image.sgx.sign import SignedEnclave, parse_date, sign_enclave

log = logging.getLogger("ppml_image")

ENCLAVE_DIR = "/ppml"
APP_DIR = f"{ENCLAVE_DIR}/app"
DEFAULT_BASE = "ppml-image/base:latest"
DEFAULT_TAG = "ppml-image/custom:latest"
DEFAULT_TEMPLATE = "python-ml"


@dataclass
class CustomImage:
    """A signed image and its measurement (what ``--json``/``--output`` write)."""

    image: str
    image_id: str
    unsigned_image: str
    unsigned_image_id: str
    base_image_id: str
    enclave: str
    sigstruct: dict[str, Any]

    @property
    def mr_enclave(self) -> str:
        return str(self.sigstruct["mr_enclave"])

    @property
    def mr_signer(self) -> str:
        return str(self.sigstruct["mr_signer"])

    def to_json(self) -> dict[str, Any]:
        return {"image": self.image, "image_id": self.image_id,
                "unsigned_image": self.unsigned_image,
                "unsigned_image_id": self.unsigned_image_id,
                "base_image_id": self.base_image_id, "enclave": self.enclave,
                "mr_enclave": self.mr_enclave, "mr_signer": self.mr_signer,
                "sigstruct": self.sigstruct}


def find_template(name_or_path: str | Path) -> Path:
    """A template path, or the name of a shipped one (``python-ml``, ``spark``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = data_dir("manifests") / f"{name_or_path}.manifest.j2"
    if shipped.is_file():
        return shipped
    names = sorted(p.name.removesuffix(".manifest.j2")
                   for p in data_dir("manifests").glob("*.manifest.j2"))
    raise UsageError(f"{name_or_path}: no such manifest template (shipped: {', '.join(names)})")


def enclave_name(template: Path) -> str:
    name = template.name
    for suffix in (".manifest.j2", ".manifest.template", ".j2", ".template", ".manifest"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _base_image(client: docker.DockerClient, ref: str) -> tuple[str, dict[str, Any]]:
    image = get_base_image(client, ref)
    return str(image.id), base_info(client, image.id)


def render_for_base(template: Path, defines: dict[str, Any], info: dict[str, Any]) -> str:
    """Render *template* with the base image's Gramine paths and Python."""
    python = mf.PythonInfo.from_snapshot(info["python"])
    values = {"app_dir": APP_DIR, "enclave_dir": ENCLAVE_DIR, "base": info, **defines}
    text = mf.read_text(template, "template")
    return mf.render_template(text, values, pkglibdir=info["gramine"]["pkglibdir"],
                              python=python, name=str(template))


def check_debug(manifest: dict[str, Any], name: str, *, release: bool) -> None:
    """A debug enclave is refused for a release and loudly flagged otherwise."""
    if manifest["sgx"]["debug"] is not True:
        return
    if release:
        raise UsageError(f"{name}: sgx.debug = true, refused with --release "
                         "(a debug enclave's memory is readable by the host)")
    log.warning("%s: sgx.debug = true: this is a DEBUG enclave; the host can read its memory. "
                "Never give it production data; use --release to forbid this.", name)


def build_unsigned(*, base: str = DEFAULT_BASE, app: Path | None = None,
                   template: str | Path = DEFAULT_TEMPLATE, defines: dict[str, Any] | None = None,
                   tag: str = DEFAULT_TAG, release: bool = False,
                   quiet: bool = False) -> tuple[str, str]:
    """Stage 1: build and tag ``TAG-unsigned``; returns (unsigned tag, image id)."""
    template_path = find_template(template)
    if app is not None and not Path(app).is_dir():
        raise UsageError(f"{app}: application folder does not exist")
    client = engine.connect()
    base_id, info = _base_image(client, base)
    name = enclave_name(template_path)
    text = render_for_base(template_path, defines or {}, info)
    parsed = mf.parse_manifest(text, f"{template_path} (rendered)",
                               pkglibdir=info["gramine"]["pkglibdir"])
    check_debug(parsed, str(template_path), release=release)

    context = engine.BuildContext()
    lines = [f"FROM {base_id}"]
    if app is not None:
        context.add_tree(Path(app), "app")
        lines.append(f"COPY app/ {APP_DIR}/")
    context.add_bytes(f"{name}.manifest", text.encode())
    lines += [f"COPY {name}.manifest {ENCLAVE_DIR}/{name}.manifest", f"WORKDIR {ENCLAVE_DIR}",
              f'CMD ["gramine-sgx", "{name}"]']
    context.add_bytes("Dockerfile", ("\n".join(lines) + "\n").encode())
    labels = {f"{LABEL_PREFIX}signed": "false", f"{LABEL_PREFIX}base-image-id": base_id,
              f"{LABEL_PREFIX}enclave": name,
              f"{LABEL_PREFIX}manifest": f"{ENCLAVE_DIR}/{name}.manifest"}
    progress = engine.Progress(f"build-custom {tag} (unsigned)", quiet=quiet)
    image_id = engine.build_image(client, context.finish(), what=f"build-custom {tag}",
                                  progress=progress, labels=labels)
    unsigned = unsigned_tag(tag)
    engine.tag_image(client, image_id, unsigned)
    progress.done(f"built {unsigned}")
    return unsigned, image_id


def unsigned_tag(tag: str) -> str:
    repository, sep, version = tag.rpartition(":")
    if not sep or "/" in version:
        return f"{tag}:latest-unsigned"
    return f"{repository}:{version}-unsigned"


def measure_and_sign(client: docker.DockerClient, unsigned: str, key: rsa.RSAPrivateKey, *,
                     date: dt.date, progress: engine.Progress | None = None
                     ) -> tuple[SignedEnclave, Any]:
    """Steps 2-3: hash the unsigned image's files and sign, all on the host.

    Returns the signed enclave and the unsigned image it measured.
    """
    progress = progress or engine.Progress(f"measuring {unsigned}", quiet=True)
    image = engine.get_image(client, unsigned)
    labels = image.labels or {}
    if labels.get(f"{LABEL_PREFIX}signed") != "false":
        raise UsageError(f"{unsigned}: not an unsigned ppml-image image "
                         f"(no {LABEL_PREFIX}signed=false label)")
    base_id = labels[f"{LABEL_PREFIX}base-image-id"]
    progress.step(1, 3, f"hashing the base image's files ({base_id[7:19]}; cached per image id)")
    index = imagefs.cached_index(client, base_id, wheelhouse.cache_root() / "index")
    progress.step(2, 3, f"hashing {ENCLAVE_DIR} of the unsigned image")
    imagefs.overlay_folder(index, client, image.id, ENCLAVE_DIR)
    tree = imagefs.ImageTree(index, client, str(image.id))
    manifest_path = labels[f"{LABEL_PREFIX}manifest"]
    text = tree.read_bytes(manifest_path).decode("utf-8")
    pal_path = tree.resolve(labels[f"{LABEL_PREFIX}gramine.libpal"])
    pal = parse_elf(tree.read_bytes(pal_path), f"{unsigned}:{pal_path}")
    progress.step(3, 3, "measuring the enclave and signing SIGSTRUCT")
    signed = sign_enclave(text, pal=pal, key=key, tree=tree, date=date,
                          name=f"{unsigned}:{manifest_path}",
                          pkglibdir=labels[f"{LABEL_PREFIX}gramine.pkglibdir"])
    return signed, image


def sign_image(unsigned: str, key: Path, *, tag: str | None = None,
               date: str | dt.date | None = None, passphrase: bytes | None = None,
               release: bool = False, quiet: bool = False) -> CustomImage:
    """Sign an unsigned image with *key* and build the final image ``tag``."""
    return _sign_image(unsigned, load_signing_key(key, passphrase), tag=tag,
                       date=parse_date(date), release=release, quiet=quiet)


def _sign_image(unsigned: str, signing_key: rsa.RSAPrivateKey, *, tag: str | None,
                date: dt.date, release: bool, quiet: bool) -> CustomImage:
    client = engine.connect()
    measuring = engine.Progress(f"measure {unsigned}", quiet=quiet)
    signed, image = measure_and_sign(client, unsigned, signing_key, date=date,
                                     progress=measuring)
    measuring.done(f"mr_enclave {signed.mr_enclave[:16]}...")
    labels = image.labels or {}
    name = labels[f"{LABEL_PREFIX}enclave"]
    check_debug(signed.manifest, f"{unsigned}:{labels[f'{LABEL_PREFIX}manifest']}",
                release=release)
    tag = tag or unsigned.removesuffix("-unsigned")
    unsigned_id = str(image.id)
    view = signed.sigstruct.view()
    context = engine.BuildContext()
    context.add_bytes(f"{name}.manifest.sgx", signed.manifest_sgx)
    context.add_bytes(f"{name}.sig", signed.sigstruct.to_bytes())
    context.add_bytes("Dockerfile", (
        f"FROM {unsigned_id}\n"
        f"COPY {name}.manifest.sgx {name}.sig {ENCLAVE_DIR}/\n").encode())
    final_labels = {
        f"{LABEL_PREFIX}signed": "true",
        f"{LABEL_PREFIX}unsigned-image-id": unsigned_id,
        f"{LABEL_PREFIX}manifest-sgx": f"{ENCLAVE_DIR}/{name}.manifest.sgx",
        f"{LABEL_PREFIX}sig": f"{ENCLAVE_DIR}/{name}.sig",
        f"{LABEL_PREFIX}mr_enclave": signed.mr_enclave,
        f"{LABEL_PREFIX}mr_signer": signed.mr_signer,
        f"{LABEL_PREFIX}isv_prod_id": str(view["isv_prod_id"]),
        f"{LABEL_PREFIX}isv_svn": str(view["isv_svn"]),
        f"{LABEL_PREFIX}debug": str(view["debug_enclave"]).lower(),
    }
    progress = engine.Progress(f"sign-image {tag}", quiet=quiet)
    image_id = engine.build_image(client, context.finish(), what=f"signing {tag}",
                                  progress=progress, labels=final_labels)
    engine.tag_image(client, image_id, tag)
    progress.done(f"built {tag}")
    return CustomImage(image=tag, image_id=image_id, unsigned_image=unsigned,
                       unsigned_image_id=unsigned_id,
                       base_image_id=labels[f"{LABEL_PREFIX}base-image-id"], enclave=name,
                       sigstruct=view)


def build_custom(key: Path, *, base: str = DEFAULT_BASE, app: Path | None = None,
                 template: str | Path = DEFAULT_TEMPLATE, defines: dict[str, Any] | None = None,
                 tag: str = DEFAULT_TAG, date: str | dt.date | None = None,
                 release: bool = False, passphrase: bytes | None = None,
                 quiet: bool = False) -> CustomImage:
    """Build, measure and sign a customer image (see the module docstring)."""
    signing_key = load_signing_key(key, passphrase)  # fail before building anything
    when = parse_date(date)
    unsigned, _ = build_unsigned(base=base, app=app, template=template, defines=defines,
                                 tag=tag, release=release, quiet=quiet)
    return _sign_image(unsigned, signing_key, tag=tag, date=when, release=release,
                       quiet=quiet)


def write_measurements(result: CustomImage, path: Path) -> None:
    from ppml_image._fs import write_atomic

    write_atomic(path, (json.dumps(result.to_json(), indent=2) + "\n").encode())
