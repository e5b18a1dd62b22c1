#!/usr/bin/env bash
# Make sure a container registry answers on 127.0.0.1:PORT, idempotently.
#
# The registry is Debian's `docker-registry` (the CNCF distribution registry,
# the same server as the `registry:2` image). On Debian as root it is
# installed from the distribution when absent, with `apache2-utils` (whose
# `htpasswd` the tests use to start a second, password-protected registry).
#
#   PPML_IMAGE_REGISTRY_PORT   port (default 5000); the address is always
#                              127.0.0.1: nothing outside this machine reaches it
#   PPML_IMAGE_REGISTRY_DIR    its folder: config.yml, storage/, registry.log
#                              (default /var/lib/ppml-image-registry/PORT as
#                              root, else ~/.local/state/ppml-image/registry-PORT)
#
# The registry has no authentication: it is reachable from this machine
# only, like the Docker socket. Docker accepts plain HTTP for it because the
# engine treats 127.0.0.0/8 as an insecure registry by default (checked
# below). It is started in the background and outlives the shell (and the
# test run) that started it, like scripts/ensure-docker.sh starts dockerd.
# Prints the registry's address (127.0.0.1:PORT) on stdout.
set -euo pipefail

log() { printf 'ensure-registry: %s\n' "$*" >&2; }

port=${PPML_IMAGE_REGISTRY_PORT:-5000}
if ! [[ $port =~ ^[1-9][0-9]{0,4}$ ]] || [ "$port" -gt 65535 ]; then
    log "PPML_IMAGE_REGISTRY_PORT=$port is not a port number (1-65535)"
    exit 2
fi
addr=127.0.0.1:$port
if [ "$(id -u)" = 0 ]; then
    default_dir=/var/lib/ppml-image-registry/$port
else
    default_dir=${XDG_STATE_HOME:-$HOME/.local/state}/ppml-image/registry-$port
fi
dir=${PPML_IMAGE_REGISTRY_DIR:-$default_dir}

# What answers on the address: "ours" (an open registry), "auth" (a registry
# that wants a password: not one we can use), "other", or "none".
probe() {
    local headers code status=0
    headers=$(curl -sS --max-time 5 -o /dev/null -D - "http://$addr/v2/" 2>/dev/null) \
        || status=$?
    if [ "$status" = 7 ]; then  # could not connect: nothing listens
        echo none
        return
    elif [ "$status" != 0 ]; then  # something listens, and does not answer HTTP
        echo other
        return
    fi
    code=$(printf '%s\n' "$headers" | awk 'NR==1 {print $2}')
    if ! printf '%s\n' "$headers" | grep -qi '^docker-distribution-api-version: registry/2'; then
        echo other
    elif [ "$code" = 200 ]; then
        echo ours
    else
        echo auth
    fi
}

check_engine_trusts_loopback() {
    # Plain HTTP to a registry needs the engine's consent; 127.0.0.0/8 has it
    # by default (dockerd's insecure-registries). Only a warning: the engine
    # may be started later, or be another one.
    local insecure
    insecure=$(docker info --format '{{range .RegistryConfig.IndexConfigs}}{{if not .Secure}}{{.Name}} {{end}}{{end}}{{range .RegistryConfig.InsecureRegistryCIDRs}}{{.}} {{end}}' 2>/dev/null) || return 0
    case " $insecure " in
        *" 127.0.0.0/8 "*|*" $addr "*) ;;
        *) log "warning: the Docker engine does not accept plain HTTP from $addr (its insecure registries: ${insecure:-none}); add \"$addr\" to insecure-registries in /etc/docker/daemon.json" ;;
    esac
}

if ! command -v curl >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing curl (to ask the registry whether it answers)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends curl >/dev/null
    else
        log "curl is missing: install it"
        exit 1
    fi
fi

state=$(probe)
case $state in
    ours)
        check_engine_trusts_loopback
        echo "$addr"
        exit 0 ;;
    auth)
        log "a registry that requires authentication already answers on $addr: not one the tests and the demo can use; stop it or set PPML_IMAGE_REGISTRY_PORT"
        exit 1 ;;
    other)
        log "something that is not a registry answers on $addr: free the port or set PPML_IMAGE_REGISTRY_PORT"
        exit 1 ;;
esac

if ! command -v docker-registry >/dev/null 2>&1 || ! command -v htpasswd >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        if ! command -v docker-registry >/dev/null 2>&1; then
            log "docker-registry is not installed: install it (Debian: apt-get install docker-registry apache2-utils) or run a registry on $addr yourself"
            exit 1
        fi
    else
        log "installing docker-registry and apache2-utils from the distribution"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends docker-registry apache2-utils >/dev/null
    fi
fi

mkdir -p "$dir/storage"
chmod 700 "$dir"
exec 9>"$dir/lock"
# Two runs starting at once: the second waits, then finds the first's registry.
flock 9
if [ "$(probe)" = ours ]; then
    check_engine_trusts_loopback
    echo "$addr"
    exit 0
fi

# Our own configuration, never the distribution's /etc/docker/registry one
# (which listens on every interface). Deleting manifests is enabled so that
# tests can remove the repositories they pushed.
cat >"$dir/config.yml.tmp" <<EOF
version: 0.1
log:
  level: warn
  fields:
    service: ppml-image-registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $addr
  headers:
    X-Content-Type-Options: [nosniff]
EOF
mv -f "$dir/config.yml.tmp" "$dir/config.yml"

logfile=$dir/registry.log
log "starting docker-registry on $addr in the background (storage: $dir/storage, log: $logfile)"
# setsid: the registry must outlive the shell (and the test run) that started it.
setsid nohup docker-registry serve "$dir/config.yml" >>"$logfile" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$dir/registry.pid"

for _ in $(seq 1 100); do
    if [ "$(probe)" = ours ]; then
        check_engine_trusts_loopback
        echo "$addr"
        exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break  # it exited (e.g. the port is taken)
    sleep 0.2
done
log "docker-registry did not start on $addr; last log lines:"
tail -n 20 "$logfile" >&2 || true
exit 1
