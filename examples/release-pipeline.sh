#!/usr/bin/env bash
# A release pipeline, end to end: the production key never meets the CI runner.
#
#   1. CI: build the base image (locked: --write-lock records every package,
#      --lock installs exactly those; BASE_LOCK=FILE to rebuild from a lock).
#   2. CI: build the customer image's unsigned stage and export the 256 bytes
#      to sign (no key anywhere).
#   3. Signing machine: review the signing data, sign it with `openssl` (or an
#      HSM through pkcs11-tool: see README, "Production release ...").
#   4. CI: assemble the signature into the image (checked against the
#      recomputed data and the public key), refuse anything but the reviewed
#      MRENCLAVE, and push the signed image; the record names its digest.
#   5. Drop every local copy of the image.
#   6. Verify by digest, as a security team would: pulled, re-hashed and
#      re-measured from its own content.
#   7. The measurement record: what to register with the attestation service.
#
# Settings (environment):
#   PROD_KEY         the production key (PEM), on the signing machine (required;
#                    PROD_PUB=PUB.pem if only the public key is at hand here and
#                    SIGNATURE=FILE is the signature made elsewhere)
#   REGISTRY         default 127.0.0.1:5000 (make demo / make test start one)
#   REPOSITORY       default ppml/release-demo; VERSION default 1
#   APP              application folder (default examples/python-ml)
#   BASE_TAG         default ppml-image/base:release; PROFILE slim|full (slim)
#   GRAMINE_SOURCE   apt|deb-dir|tree, GRAMINE_PATH (default: a stand-in tree,
#                    which measures and signs for real but cannot run in SGX)
#   BASE_LOCK        rebuild the base from this lock instead of writing one
#   DATE             SIGSTRUCT date (default: from SOURCE_DATE_EPOCH, else today)
#   EXPECT_MR_ENCLAVE  the registered MRENCLAVE when re-building a release
#   OUT              where the files go (default release-out)
#   PPML             the ppml-image command (default: ppml-image)
set -euo pipefail

PPML=${PPML:-ppml-image}
PYTHON=${PYTHON:-python3}
REGISTRY=${REGISTRY:-127.0.0.1:5000}
REPOSITORY=${REPOSITORY:-ppml/release-demo}
VERSION=${VERSION:-1}
APP=${APP:-examples/python-ml}
BASE_TAG=${BASE_TAG:-ppml-image/base:release}
PROFILE=${PROFILE:-slim}
OUT=${OUT:-release-out}
IMAGE=$REGISTRY/$REPOSITORY:$VERSION
if [ -n "${SOURCE_DATE_EPOCH:-}" ]; then
    DATE=${DATE:-$(date -u -d "@$SOURCE_DATE_EPOCH" +%F)}
else
    DATE=${DATE:-$(date -u +%F)}
fi

say() { printf '\n== %s\n' "$*" >&2; }
field() { "$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

if [ -z "${PROD_KEY:-}" ] && [ -z "${SIGNATURE:-}" ]; then
    echo "release-pipeline: set PROD_KEY=prod-key.pem (or SIGNATURE and PROD_PUB)" >&2
    exit 2
fi
mkdir -p "$OUT"

# ---------------------------------------------------------------------------
say "1. CI: the base image $BASE_TAG ($PROFILE)"
gramine_args=()
if [ -z "${GRAMINE_SOURCE:-}" ]; then
    echo "no GRAMINE_SOURCE: using a STAND-IN Gramine tree in $OUT/gramine-tree" >&2
    rm -rf "$OUT/gramine-tree"
    "$PYTHON" -c 'import sys; from pathlib import Path; from ppml_image.testing import make_gramine_tree; make_gramine_tree(Path(sys.argv[1]))' "$OUT/gramine-tree"
    GRAMINE_SOURCE=tree
    GRAMINE_PATH=$OUT/gramine-tree
fi
gramine_args+=(--gramine-source "$GRAMINE_SOURCE")
[ -n "${GRAMINE_PATH:-}" ] && gramine_args+=(--gramine-path "$GRAMINE_PATH")
if [ -n "${BASE_LOCK:-}" ]; then
    lock_args=(--lock "$BASE_LOCK")
else
    lock_args=(--write-lock "$OUT/base.lock")
fi
"$PPML" build-base --profile "$PROFILE" --tag "$BASE_TAG" "${gramine_args[@]}" \
    "${lock_args[@]}" --json >"$OUT/base.json"

# ---------------------------------------------------------------------------
say "2. CI: build the unsigned image and export what to sign (no key here)"
"$PPML" build-custom --base "$BASE_TAG" --app "$APP" --tag "$IMAGE" --date "$DATE" \
    --release --export-signing-data "$OUT/app.tbs" --json >"$OUT/export.json"

# ---------------------------------------------------------------------------
say "3. signing machine: review the bytes to sign, then sign them offline"
"$PPML" sigstruct --signing-data "$OUT/app.tbs" --json >"$OUT/review.json"
reviewed=$(field "$OUT/review.json" mr_enclave)
if [ "$(field "$OUT/review.json" debug_enclave)" != False ]; then
    echo "release-pipeline: the signing data is for a DEBUG enclave: not signing it" >&2
    exit 3
fi
echo "reviewed: mr_enclave $reviewed, isv_prod_id $(field "$OUT/review.json" isv_prod_id), isv_svn $(field "$OUT/review.json" isv_svn)" >&2
if [ -n "${PROD_KEY:-}" ]; then
    openssl dgst -sha256 -sign "$PROD_KEY" -out "$OUT/app.tbs.sig" "$OUT/app.tbs"
    openssl rsa -in "$PROD_KEY" -pubout -out "$OUT/prod-pub.pem" 2>/dev/null
    SIGNATURE=$OUT/app.tbs.sig
    PROD_PUB=${PROD_PUB:-$OUT/prod-pub.pem}
fi

# ---------------------------------------------------------------------------
say "4. CI: assemble the signature, check the MRENCLAVE, push $IMAGE"
# --record: the signature goes onto the very image whose data was exported, and the
# image must differ from the pinned base (named in app.tbs.json) only in the enclave.
"$PPML" sign-image "$IMAGE-unsigned" --date "$DATE" --signature "$SIGNATURE" \
    --public-key "$PROD_PUB" --record "$OUT/app.tbs.json" --tag "$IMAGE" --release \
    --expect-mr-enclave "${EXPECT_MR_ENCLAVE:-$reviewed}" --push \
    --output "$OUT/measurements.json" --json >/dev/null
digest=$(field "$OUT/measurements.json" repo_digest)
mr_signer=$(field "$OUT/measurements.json" mr_signer)
echo "pushed: $digest" >&2

# ---------------------------------------------------------------------------
say "5. drop every local copy of the image"
docker image rm "$IMAGE" "$IMAGE-unsigned" >/dev/null

# ---------------------------------------------------------------------------
say "6. verify by digest: pulled, re-hashed and re-measured from its own content"
# --record pins the base (never a label): outside the enclave nothing may differ from it.
"$PPML" verify "$digest" --mr-enclave "$reviewed" --mr-signer "$mr_signer" \
    --record "$OUT/measurements.json" --json >"$OUT/verify.json"

# ---------------------------------------------------------------------------
say "7. the measurement record: $OUT/measurements.json"
echo "digest:     $digest"
echo "mr_enclave: $(field "$OUT/measurements.json" mr_enclave)"
echo "mr_signer:  $mr_signer"
echo "isv_prod_id $(field "$OUT/measurements.json" isv_prod_id), isv_svn $(field "$OUT/measurements.json" isv_svn)"
