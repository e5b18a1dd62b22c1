#!/usr/bin/env bash
# Make sure SoftHSM2 (a PKCS#11 token in software) and OpenSC's pkcs11-tool
# are installed, idempotently, like scripts/ensure-docker.sh does for the
# engine. The tests create their own token in a temporary folder (through
# SOFTHSM2_CONF); nothing here creates, reads or changes a token.
set -euo pipefail

log() { printf 'ensure-softhsm: %s\n' "$*" >&2; }

have_all() {
    command -v softhsm2-util >/dev/null 2>&1 \
        && command -v pkcs11-tool >/dev/null 2>&1 \
        && [ -n "$(softhsm_module)" ]
}

softhsm_module() {
    local candidate
    for candidate in /usr/lib/softhsm/libsofthsm2.so \
                     /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so \
                     /usr/local/lib/softhsm/libsofthsm2.so; do
        if [ -e "$candidate" ]; then
            printf '%s\n' "$candidate"
            return
        fi
    done
}

if have_all; then
    exit 0
fi

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "softhsm2 and opensc (pkcs11-tool) are missing: install them (Debian: apt-get install softhsm2 opensc)"
    exit 1
fi

log "installing softhsm2 and opensc from the distribution"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends softhsm2 opensc >/dev/null

if ! have_all; then
    log "softhsm2/opensc installed but softhsm2-util, pkcs11-tool or libsofthsm2.so is still missing"
    exit 1
fi
log "installed: $(softhsm2-util --version 2>/dev/null | head -n1), module $(softhsm_module)"
