#!/usr/bin/env bash
# Real Segment / RudderStack SDKs, unchanged, against siyu's /v1/* tracking API.
#
#   tests/sdk/run.sh            # from anywhere; needs python3 (with venv), cargo, network for
#                               # the first install; node + npm for the Node SDK (else skipped)
#
# Installs the pinned SDKs (tests/sdk/.venv, tests/sdk/node/node_modules; reinstalled only when
# requirements.txt / package-lock.json change), builds siyu, creates a tenant in a throwaway
# database, serves it on a free port, runs segment_sdk_test.py once per SDK, and stops the server.
# Prints `sdk: N passed, M failed` and exits non-zero if any SDK failed.
#
# Environment: SIYU_BIN=path skips the cargo build and uses that binary; SDK_TESTS="segment rudder
# node" picks the SDKs; SDK_KEEP=1 keeps the temp dir (database, server log).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tests="${SDK_TESTS:-segment rudder node}"

log() { printf 'sdk: %s\n' "$*" >&2; }
die() { log "$*"; echo "sdk: FAIL (setup): $*"; exit 1; }

hash_of() { python3 -c 'import hashlib,sys; print(hashlib.sha256(open(sys.argv[1],"rb").read()).hexdigest())' "$1"; }

# --- 1. SDKs ------------------------------------------------------------------------------------
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
want="$(hash_of "$here/requirements.txt")"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    log "installing python SDKs into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt" \
        || die "pip install -r tests/sdk/requirements.txt failed"
    echo "$want" >"$stamp"
fi
py="$venv/bin/python"

node_skip=""
if [[ " $tests " == *" node "* ]]; then
    if command -v node >/dev/null && command -v npm >/dev/null; then
        nstamp="$here/node/node_modules/.package-lock.sha256"
        nwant="$(hash_of "$here/node/package-lock.json")"
        if [[ "$(cat "$nstamp" 2>/dev/null || true)" != "$nwant" ]]; then
            log "installing the node SDK (npm ci)"
            (cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) || die "npm ci failed in tests/sdk/node"
            echo "$nwant" >"$nstamp"
        fi
    else
        node_skip="node (node/npm not installed)"
        tests="${tests//node/}"
    fi
fi

# --- 2. siyu --------------------------------------------------------------------------------------
if [[ -n "${SIYU_BIN:-}" ]]; then
    siyu="$SIYU_BIN"
else
    log "cargo build -p siyu"
    (cd "$root" && cargo build --quiet -p siyu) || die "cargo build -p siyu failed"
    target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    siyu="$target_dir/debug/siyu"
fi
[[ -x "$siyu" ]] || die "no siyu binary at $siyu"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/siyu-sdk.XXXXXX")"
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ "${SDK_KEEP:-0}" == 1 ]]; then log "kept $tmp"; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

db="$tmp/siyu.db"
"$siyu" --database "$db" tenant create --name sdk --industry consumer_goods >"$tmp/tenant.txt" 2>"$tmp/tenant.err" \
    || { cat "$tmp/tenant.txt" "$tmp/tenant.err" >&2; die "siyu tenant create failed"; }
write_key="$(awk '/^write key/ {print $3}' "$tmp/tenant.txt")"
secret_key="$(awk '/^secret key/ {print $3}' "$tmp/tenant.txt")"
[[ "$write_key" == wk_* && "$secret_key" == sk_* ]] || { cat "$tmp/tenant.txt" >&2; die "could not parse the tenant keys"; }

port="$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
host="http://127.0.0.1:$port"
"$siyu" --database "$db" serve --bind "127.0.0.1:$port" >"$tmp/server.log" 2>&1 &
server_pid=$!

server_log() { log "server log (last 40 lines):"; tail -n 40 "$tmp/server.log" >&2 || true; }
ready=""
for _ in $(seq 1 150); do
    kill -0 "$server_pid" 2>/dev/null || { server_log; die "siyu serve exited early"; }
    if "$py" -c 'import sys,urllib.request; urllib.request.urlopen(sys.argv[1] + "/healthz", timeout=1)' "$host" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.2
done
[[ -n "$ready" ]] || { server_log; die "siyu did not answer $host/healthz within 30s"; }
log "siyu serving on $host"

# --- 3. the SDK tests -----------------------------------------------------------------------------
passed=0
failed=0
failed_names=()
limit=()
command -v timeout >/dev/null && limit=(timeout 120)
for sdk in $tests; do
    if ${limit[@]+"${limit[@]}"} "$py" "$here/segment_sdk_test.py" --sdk "$sdk" --host "$host" \
        --write-key "$write_key" --secret-key "$secret_key"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1))
        failed_names+=("$sdk")
    fi
done

if ((failed > 0)); then
    server_log
fi
summary="sdk: $passed passed, $failed failed"
((failed > 0)) && summary+=" (${failed_names[*]})"
[[ -n "$node_skip" ]] && summary+=", 1 skipped: $node_skip"
echo "$summary"
((failed == 0))
