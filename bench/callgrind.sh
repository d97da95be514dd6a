#!/usr/bin/env bash
# Instructions per proxied small GET, measured by difference (docs/benchmarks.md,
# "Instructions per request"): examples/bench_target (release) under
# `valgrind --tool=callgrind` in front of an nginx origin answering 100 bytes, driven by a
# Python keep-alive loop of FEW and then of MANY requests; the figure is
# (instructions of the MANY run - instructions of the FEW run) / (MANY - FEW), which cancels
# start-up, warm-up and shutdown. Instruction counts are repeatable where CPU time is not.
#
# Usage: bench/callgrind.sh [BINARY [ARG...]]
#   BINARY  a bench_target build to measure (default: build this checkout's)
#   ARG...  its arguments (default: 127.0.0.1:18093, bench_target's listen address)
# The server binary, as users run it, on the peer harness's cluster file:
#   RUST_LOG=warn TARGET_PATH=/api/v1/namespaces/default/pods/origin-0:18090/proxy/small \
#     bench/callgrind.sh target/release/kube-bastion --listen 127.0.0.1:18093 \
#     --cluster bench/peer/cluster.yaml --destination-allow 127.0.0.0/8
# Env: FEW (500), MANY (2500), TARGET_PATH (a pod path through the proxy), KEEP (a folder
# that receives both callgrind profiles, for callgrind_annotate), BODY_BYTES (POST a body
# of that many bytes instead of the GET: the origin echoes it back chunked, as the peer
# harness's echo scenario; TARGET_PATH must then end in /echo).
# Needs: valgrind, nginx, python3; with BODY_BYTES, nginx's echo module
# (libnginx-mod-http-echo).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
few=${FEW:-500}
many=${MANY:-2500}
path=${TARGET_PATH:-/api/v1/namespaces/default/pods/origin:18090/proxy/small}
origin_port=18090
proxy_port=18093

if [[ $# -ge 1 ]]; then
    binary=$1
    shift
else
    cargo build --release --locked --quiet --example bench_target --manifest-path "$repo/Cargo.toml"
    binary=$repo/target/release/examples/bench_target
fi

args=("$@")
if [[ ${#args[@]} -eq 0 ]]; then
    args=("127.0.0.1:$proxy_port")
fi

run=$(mktemp -d)
cleanup() {
    [[ -f $run/nginx.pid ]] && kill "$(cat "$run/nginx.pid")" 2>/dev/null || true
    rm -rf "$run"
}
trap cleanup EXIT

body_bytes=${BODY_BYTES:-0}
echo_module= echo_location=
if [[ $body_bytes -gt 0 ]]; then
    echo_module="load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;"
    echo_location="location ~ /echo\$ { client_body_buffer_size 64k; client_body_in_single_buffer on; echo_read_request_body; echo_request_body; }"
fi

mkdir -p "$run/tmp"
cat > "$run/nginx.conf" <<EOF
$echo_module
worker_processes 1;
pid $run/nginx.pid;
error_log $run/nginx.error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $run/tmp/client;
    proxy_temp_path $run/tmp/proxy;
    fastcgi_temp_path $run/tmp/fastcgi;
    uwsgi_temp_path $run/tmp/uwsgi;
    scgi_temp_path $run/tmp/scgi;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$origin_port;
        location ~ /small\$ {
            default_type text/plain;
            return 200 "sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss\n";
        }
        $echo_location
    }
}
EOF
nginx -c "$run/nginx.conf" -p "$run" -e "$run/nginx.error.log"

# Sends N keep-alive GETs (or POSTs of BODY_BYTES, whose echo must come back whole) once the
# proxy listens; fails on any answer but 200.
drive() {
    python3 - "$proxy_port" "$path" "$1" "$body_bytes" <<'PY'
import http.client, sys, time
port, path, n, size = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
payload = b"e" * size
deadline = time.time() + 120
while True:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.connect()
        break
    except OSError:
        if time.time() > deadline:
            sys.exit("the proxy did not start")
        time.sleep(0.2)
for _ in range(n):
    if size:
        conn.request("POST", path, body=payload)
    else:
        conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        sys.exit(f"status {response.status}: {body[:200]!r}")
    if size and body != payload:
        sys.exit(f"the echo came back changed ({len(body)} bytes)")
PY
}

# Total instructions of one run of N requests.
instructions() {
    local n=$1 out=$run/callgrind.$1
    valgrind --tool=callgrind --callgrind-out-file="$out" "$binary" "${args[@]}" \
        >/dev/null 2>"$run/valgrind.$n.log" &
    local pid=$!
    drive "$n"
    kill -TERM "$pid"
    wait "$pid" || true
    awk '/^summary:/ { print $2 }' "$out"
}

a=$(instructions "$few")
b=$(instructions "$many")
echo "instructions: $few requests $a, $many requests $b"
echo "per request: $(( (b - a) / (many - few) ))"
if [[ -n ${KEEP:-} ]]; then
    mkdir -p "$KEEP"
    cp "$run/callgrind.$few" "$run/callgrind.$many" "$KEEP"/
fi
