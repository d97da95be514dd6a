#!/usr/bin/env bash
# Runs the peer reverse-proxy benchmark harness (direct, nginx, Go's ReverseProxy) with
# kube-bastion as an extra column, proxying a Service whose endpoint is the harness origin.
#
# Usage: bench/peer/run.sh HARNESS_DIR   (the folder holding the harness's run.sh)
# Needs: apt-get install -y wrk nginx libnginx-mod-http-echo golang-go curl iproute2
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
harness=${1:?usage: bench/peer/run.sh HARNESS_DIR}

cargo build --release --locked -p kube-bastion-server --manifest-path "$repo/Cargo.toml"
bin="$repo/target/release/kube-bastion"

export TARGET_CMD_ours="RUST_LOG=error $bin --listen 127.0.0.1:18083 --cluster $here/cluster.yaml --destination-allow 127.0.0.0/8"
cd "$harness"
exec ./run.sh ours=http://127.0.0.1:18083/api/v1/namespaces/default/services/origin:http/proxy
