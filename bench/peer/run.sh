#!/usr/bin/env bash
# Runs the peer reverse-proxy benchmark harness (direct, nginx, Go's ReverseProxy) with
# kube-bastion as an extra column: examples/bench_target.rs (ProxyService on one thread)
# proxying pod default/origin, whose IP is the harness origin's 127.0.0.1:18080.
#
# Usage: bench/peer/run.sh HARNESS_DIR   (the folder holding the harness's run.sh)
# Needs: apt-get install -y wrk nginx libnginx-mod-http-echo golang-go curl iproute2
# Knobs of the harness (REPS, DUR, LAT_DUR, SCENARIOS, OUT_DIR, ...) pass through.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
harness=${1:?usage: bench/peer/run.sh HARNESS_DIR}

cargo build --release --locked --example bench_target --manifest-path "$repo/Cargo.toml"
export TARGET_CMD_ours="$repo/target/release/examples/bench_target 127.0.0.1:18083"
cd "$harness"
exec ./run.sh ours=http://127.0.0.1:18083/api/v1/namespaces/default/pods/origin:18080/proxy
