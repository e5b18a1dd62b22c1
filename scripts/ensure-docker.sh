#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine, idempotently.
# On Debian as root: install docker.io from the distribution if it is absent,
# start dockerd in the background, and wait for its socket. Elsewhere: say
# what is missing instead of guessing.
set -euo pipefail

log() { printf 'ensure-docker: %s\n' "$*" >&2; }

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# debootstrap builds the OS base image when no registry answers (bootstrap-os).
if ! command -v debootstrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
        && command -v apt-get >/dev/null 2>&1; then
    log "installing debootstrap from the distribution"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q debootstrap >/dev/null
fi

if engine_up; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    log "no Docker engine answers and this is not root: start dockerd (or Docker Desktop) and retry"
    exit 1
fi

if ! command -v dockerd >/dev/null 2>&1; then
    if ! command -v apt-get >/dev/null 2>&1; then
        log "dockerd is not installed and this is not a Debian-like system: install Docker Engine"
        exit 1
    fi
    log "installing docker.io from the distribution"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q docker.io >/dev/null
fi

logfile=/var/log/ppml-image-dockerd.log
log "starting dockerd in the background (log: $logfile)"
# setsid: the engine must outlive the shell (and the test run) that started it.
setsid nohup dockerd >"$logfile" 2>&1 </dev/null &

for _ in $(seq 1 60); do
    if engine_up; then
        log "engine is up: $(docker version --format '{{.Server.Version}}')"
        exit 0
    fi
    sleep 1
done
log "dockerd did not answer within 60 s; last log lines:"
tail -n 20 "$logfile" >&2 || true
exit 1
