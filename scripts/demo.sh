#!/usr/bin/env bash
# The whole chain on this machine: OS image, base image, enclave key, signed
# custom image pushed to the local registry, inspect, and verify by digest.
# Run through `make demo`, which installs the virtual environment and starts
# a Docker engine and the local registry (scripts/ensure-registry.sh) first.
#
#   PROFILE=slim|full              base image profile (default slim: fast)
#   GRAMINE_SOURCE=apt|deb-dir|tree and GRAMINE_PATH=DIR
#                                  where Gramine comes from; without them a
#                                  STAND-IN tree is generated (not Gramine:
#                                  the images are measured and signed for
#                                  real but cannot run in an enclave).
set -euo pipefail
cd "$(dirname "$0")/.."
PPML=.venv/bin/ppml-image
OUT=demo-out
PROFILE=${PROFILE:-slim}
BASE_TAG=ppml-image/base:demo-$PROFILE
REGISTRY=$(bash scripts/ensure-registry.sh)
APP_TAG=$REGISTRY/ppml-image/demo-app:latest
mkdir -p "$OUT"

say() { printf '\n== %s\n' "$*"; }

if ! docker image inspect debian:bookworm >/dev/null 2>&1; then
    say "no OS base image and no registry: building debian:bookworm from Debian packages"
    $PPML bootstrap-os --suite bookworm --tag debian:bookworm
fi

if [ -z "${GRAMINE_SOURCE:-}" ]; then
    say "no Gramine given: generating a STAND-IN install tree in $OUT/gramine-tree"
    rm -rf "$OUT/gramine-tree"
    .venv/bin/python -c 'import sys; from pathlib import Path; from ppml_image.testing import make_gramine_tree; make_gramine_tree(Path(sys.argv[1]))' "$OUT/gramine-tree"
    GRAMINE_SOURCE=tree
    GRAMINE_PATH=$OUT/gramine-tree
fi

say "build-base ($PROFILE, Gramine from $GRAMINE_SOURCE)"
gramine_args=(--gramine-source "$GRAMINE_SOURCE")
[ -n "${GRAMINE_PATH:-}" ] && gramine_args+=(--gramine-path "$GRAMINE_PATH")
$PPML build-base --profile "$PROFILE" --tag "$BASE_TAG" "${gramine_args[@]}"

say "keygen (kept in $OUT/keys, mode 0600; never copied into Docker)"
if [ ! -f "$OUT/keys/enclave-key.pem" ]; then
    $PPML keygen "$OUT/keys/enclave-key.pem"
fi

say "build-custom: unsigned stage, measured and signed on the host, final stage, pushed"
$PPML build-custom --key "$OUT/keys/enclave-key.pem" --base "$BASE_TAG" \
    --app examples/python-ml --tag "$APP_TAG" --release --policy name-service --push \
    --output "$OUT/measurements.json"
record() { .venv/bin/python -c 'import json, sys; print(json.load(open("demo-out/measurements.json"))[sys.argv[1]])' "$1"; }

say "inspect (no key needed)"
$PPML inspect "$APP_TAG"

say "verify by digest (pulled if not local; re-reads and re-measures the image; trusts no label)"
$PPML verify "$(record repo_digest)" --mr-enclave "$(record mr_enclave)" \
    --mr-signer "$(record mr_signer)" --record "$OUT/measurements.json"

say "the application, run natively in the signed image (no SGX on this machine)"
docker run --rm --network none "$APP_TAG" python3 /ppml/app/main.py

say "done: measurements in $OUT/measurements.json"
