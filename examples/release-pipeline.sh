#!/usr/bin/env bash
# A release pipeline, end to end: the production key never meets the CI runner.
#
#   1. CI: build the base image (locked: --write-lock records every package,
#      --lock installs exactly those; BASE_LOCK=FILE to rebuild from a lock).
#   2. CI: build the customer image's unsigned stage and export the 256 bytes
#      to sign (no key anywhere).
#   3. Signing machine: review the signing data, sign it with `openssl` (or an
#      HSM through pkcs11-tool: see docs/signers.md, "Production release ...").
#   4. CI: assemble the signature into the image (checked against the
#      recomputed data and the public key), refuse anything but the reviewed
#      MRENCLAVE, and push the signed image; the record names its digest.
#   5. Drop every local copy of the image.
#   6. Verify by digest, as a security team would: pulled, re-hashed and
#      re-measured from its own content.
#   7. The measurement record: what to register with the attestation service.
#   8. Register it with eHSM (EHSM_URL; without it, the local protocol
#      stand-in of tests/attest_services.py, which checks what eHSM checks but
#      is NOT a real eHSM): the record gains the policy id.
#   9. Export the policies for the services a security team runs.
#  10. Check a quote against a record, at a stated time: by default the public
#      SGX vector quote (tests/attestation/) against a record of its values.
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
#   RELEASE_POLICY   what --release may accept unmeasured (default name-service)
#   PPML             the ppml-image command (default: ppml-image)
#   EHSM_URL, EHSM_APP_ID, EHSM_API_KEY_FILE, EHSM_CA_BUNDLE
#                    a real eHSM to register with (default: the local stand-in)
#   QUOTE, COLLATERAL, QUOTE_RECORD, QUOTE_AT, QUOTE_NONCE, QUOTE_ALLOW_TCB
#                    the quote to check (default: the vector quote, its values,
#                    2025-06-20T00:00:00Z, "Hello, world!", the TCB status
#                    Intel gave its platform then)
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
# The shipped templates read seven name-service files in /etc unmeasured: the
# release policy accepts them only when named (manifests/name-service.policy.toml).
RELEASE_POLICY=${RELEASE_POLICY:-name-service}
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
    --release --policy "$RELEASE_POLICY" --export-signing-data "$OUT/app.tbs" \
    --json >"$OUT/export.json"

# ---------------------------------------------------------------------------
say "3. signing machine: review the bytes to sign, then sign them offline"
# --release refuses (exit 3) signing data the host could launch as debug: the
# DEBUG flag, a mask that leaves it out, or any mask Gramine would not write.
if ! "$PPML" sigstruct --signing-data "$OUT/app.tbs" --release --json >"$OUT/review.json"; then
    echo "release-pipeline: the signing data could be launched as debug: not signing it" >&2
    exit 3
fi
reviewed=$(field "$OUT/review.json" mr_enclave)
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
    --policy "$RELEASE_POLICY" \
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

# ---------------------------------------------------------------------------
say "8. register the measurement with eHSM"
here=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${EHSM_URL:-}" ]; then
    stand_in=$here/tests/attest_services.py
    if [ ! -f "$stand_in" ]; then
        echo "release-pipeline: set EHSM_URL, EHSM_APP_ID and EHSM_API_KEY_FILE" >&2
        exit 2
    fi
    echo "no EHSM_URL: registering with the LOCAL PROTOCOL STAND-IN, not a real eHSM" >&2
    rm -rf "$OUT/ehsm-stand-in"
    mkdir -m 700 "$OUT/ehsm-stand-in"
    "$PYTHON" "$stand_in" ehsm "$OUT/ehsm-stand-in" &
    stand_in_pid=$!
    trap 'kill "$stand_in_pid" 2>/dev/null || true' EXIT
    for _ in $(seq 300); do
        [ -f "$OUT/ehsm-stand-in/url" ] && break
        kill -0 "$stand_in_pid" 2>/dev/null || break
        sleep 0.1
    done
    EHSM_URL=$(cat "$OUT/ehsm-stand-in/url")
    EHSM_APP_ID=$(cat "$OUT/ehsm-stand-in/app-id")
    EHSM_API_KEY_FILE=$OUT/ehsm-stand-in/api-key
    EHSM_CA_BUNDLE=$OUT/ehsm-stand-in/ca.pem
fi
ca_args=()
[ -n "${EHSM_CA_BUNDLE:-}" ] && ca_args=(--ca-bundle "$EHSM_CA_BUNDLE")
"$PPML" attest register "$OUT/measurements.json" --service ehsm --url "$EHSM_URL" \
    --app-id "$EHSM_APP_ID" --api-key-file "$EHSM_API_KEY_FILE" "${ca_args[@]}" \
    --output "$OUT/registered.json" --json >"$OUT/register.json"
echo "policy_id:  $(field "$OUT/registered.json" policy_id)"

# ---------------------------------------------------------------------------
say "9. the policies, for the services a security team runs: $OUT/policies/"
mkdir -p "$OUT/policies"
for format in ra-tls ita maa trustee marblerun intel-appraisal ehsm bigdl-as; do
    "$PPML" attest policy "$OUT/registered.json" --format "$format" \
        --output "$OUT/policies/$format.policy" --json >/dev/null
done

# ---------------------------------------------------------------------------
say "10. a quote checked against a record, at a stated time"
QUOTE_AT=${QUOTE_AT:-2025-06-20T00:00:00Z}
if [ -z "${QUOTE:-}" ]; then
    # The public SGX vector quote and the values its report holds (see its README).
    QUOTE=$here/tests/attestation/sgx_quote
    COLLATERAL=$here/tests/attestation/sgx_quote_collateral.json
    QUOTE_NONCE=${QUOTE_NONCE:-Hello, world!}
    QUOTE_ALLOW_TCB=${QUOTE_ALLOW_TCB:-ConfigurationAndSWHardeningNeeded}
    QUOTE_RECORD=$OUT/vector-record.json
    cat >"$QUOTE_RECORD" <<'RECORD'
{"tee": "sgx",
 "mr_enclave": "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb",
 "mr_signer": "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6",
 "isv_prod_id": 0, "isv_svn": 0,
 "attributes": "0500000000000000e700000000000000",
 "attribute_mask": "ffffffffffffffff1bfff9ffffffffff",
 "misc_select": "00000000", "misc_mask": "ffffffff", "debug": false}
RECORD
fi
quote_args=(--collateral "$COLLATERAL" --record "${QUOTE_RECORD:-$OUT/registered.json}"
            --at "$QUOTE_AT")
[ -n "${QUOTE_NONCE:-}" ] && quote_args+=(--nonce "$QUOTE_NONCE")
[ -n "${QUOTE_ALLOW_TCB:-}" ] && quote_args+=(--allow-tcb "$QUOTE_ALLOW_TCB")
"$PPML" attest verify "$QUOTE" "${quote_args[@]}" --json >"$OUT/quote-verdict.json"
echo "quote:      accepted at $QUOTE_AT ($(field "$OUT/quote-verdict.json" tcb_status))"
