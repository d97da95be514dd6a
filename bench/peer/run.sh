#!/usr/bin/env bash
# Runs the peer reverse-proxy benchmark harness (direct, nginx, Go's ReverseProxy) with
# kube-bastion as two extra columns, both proxying the harness origin 127.0.0.1:18080:
#   layer   examples/bench_target.rs (ProxyService alone, one thread), pod default/origin;
#   server  the kube-bastion binary as users run it, on bench/peer/cluster.yaml, pod
#           default/origin-0 (the same path as the layer's, so the difference is the
#           server's own cost; RUST_LOG=warn: no access log line per request).
#
# Usage: bench/peer/run.sh HARNESS_DIR   (the folder holding the harness's run.sh)
# Needs: apt-get install -y wrk nginx libnginx-mod-http-echo golang-go curl iproute2
# Knobs of the harness (REPS, DUR, LAT_DUR, SCENARIOS, OUT_DIR, ...) pass through;
# SERVER_FLAGS adds flags to the server (for example `--worker-threads 0`); PROFILE picks the
# cargo profile of both builds (`release`, the default, or `dist`: what the image ships).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
harness=${1:?usage: bench/peer/run.sh HARNESS_DIR}

profile=${PROFILE:-release}
cargo build --profile "$profile" --locked --manifest-path "$repo/Cargo.toml" \
    --example bench_target -p kube-bastion-tests
cargo build --profile "$profile" --locked --manifest-path "$repo/Cargo.toml" -p kube-bastion-server
export TARGET_CMD_layer="$repo/target/$profile/examples/bench_target 127.0.0.1:18083"
export TARGET_CMD_server="env RUST_LOG=warn $repo/target/$profile/kube-bastion \
--listen 127.0.0.1:18084 --cluster $here/cluster.yaml --destination-allow 127.0.0.0/8 \
${SERVER_FLAGS:-}"
cd "$harness"
exec ./run.sh \
    layer=http://127.0.0.1:18083/api/v1/namespaces/default/pods/origin:18080/proxy \
    server=http://127.0.0.1:18084/api/v1/namespaces/default/pods/origin-0:18080/proxy
