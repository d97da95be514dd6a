#!/usr/bin/env bash
# Runtime shapes side by side: the kube-bastion binary (`release`) on bench/peer/cluster.yaml
# with --worker-threads 2 (multi-thread), --runtime per-core --worker-threads 2 and
# --worker-threads 0 (current-thread), in turn for every load (ABCABC...), against the peer
# harness's nginx origin (small GET, 100 B), driven by wrk. Nothing is pinned.
#
# Usage: bench/peer/shapes.sh HARNESS_DIR OUT_TSV   (HARNESS_DIR holds conf/nginx-origin.conf.in)
# Knobs: REPS=3 DUR=10 WARM=2 ORIGIN_PORT=28080 SERVER_PORT=28084 EXTRA='server flags'
#        LOADS_ENV='1 8,1 64,2 256' (wrk threads and connections, comma-separated)
# Per run: requests, req/s, p50/p99 (us), the server's CPU (utime+stime) per request (us),
# non-2xx answers, CPU seconds used by other processes meanwhile, and steal (%).
# Needs: cargo build --release --locked -p kube-bastion-server; wrk, nginx, curl.
set -uo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
harness=${1:?usage: bench/peer/shapes.sh HARNESS_DIR OUT_TSV}; out=${2:?usage: bench/peer/shapes.sh HARNESS_DIR OUT_TSV}
: "${ORIGIN_PORT:=28080}" "${SERVER_PORT:=28084}" "${DUR:=10}" "${WARM:=2}" "${REPS:=3}"
run=$(mktemp -d)
mkdir -p "$run/www" "$run/nginx-origin-tmp"
head -c 1048576 /dev/zero | tr '\0' 'L' >"$run/www/large"
sed -e "s#@RUNDIR@#$run#g" -e "s#@PORT@#$ORIGIN_PORT#g" \
    "$harness/conf/nginx-origin.conf.in" >"$run/nginx-origin.conf"
sed "s/18080/$ORIGIN_PORT/g" "$repo/bench/peer/cluster.yaml" >"$run/cluster.yaml"
nginx -p "$run" -c "$run/nginx-origin.conf" -g 'daemon off;' >"$run/origin.log" 2>&1 &
origin=$!
trap 'kill $origin 2>/dev/null; [ -n "${server:-}" ] && kill $server 2>/dev/null; rm -rf "$run"' EXIT
sleep 0.5
url="http://127.0.0.1:$SERVER_PORT/api/v1/namespaces/default/pods/origin-0:$ORIGIN_PORT/proxy/small"
bin=$repo/target/release/kube-bastion
declare -A SHAPE=(
  [mt2]="--worker-threads 2"
  [pc2]="--runtime per-core --worker-threads 2"
  [ct]="--worker-threads 0"
)
if [ -n "${LOADS_ENV:-}" ]; then IFS=, read -ra LOADS <<<"$LOADS_ENV"; else LOADS=("1 8" "1 64" "2 256"); fi
ticks() { local s; s=$(cat /proc/$1/stat); s=${s##*) }; set -- $s; echo $(( ${12} + ${13} )); }
to_us() { awk -v v="$1" 'BEGIN{ if (v ~ /us$/) {sub(/us$/,"",v); print v+0}
  else if (v ~ /ms$/) {sub(/ms$/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s$/,"",v); print v*1e6} }'; }
hz=$(getconf CLK_TCK)
# CPU ticks of processes that are not this benchmark's (a parallel build or benchmark).
others() { local total=0 p s; for p in /proc/[0-9]*; do
  s=$(cat $p/stat 2>/dev/null) || continue; s=${s##*) }; set -- $s
  case "${p#/proc/} $2" in "$$ "*|"$origin "*|"$server "*|*" $origin") continue;; esac
  total=$((total + ${12} + ${13})); done; echo $total; }
steal() { awk '/^cpu /{print $9+0, $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat; }
printf 'rep\tshape\tthreads\tconns\trequests\trps\tp50_us\tp99_us\tcpu_us_per_req\tnon2xx\tother_cpu_s\tsteal_pct\n' >"$out"
for rep in $(seq "$REPS"); do
  for load in "${LOADS[@]}"; do
    set -- $load; t=$1; c=$2
    for shape in mt2 pc2 ct; do
      RUST_LOG=warn "$bin" --listen "127.0.0.1:$SERVER_PORT" --cluster "$run/cluster.yaml" \
        --destination-allow 127.0.0.0/8 ${EXTRA:-} ${SHAPE[$shape]} >"$run/server-$shape.log" 2>&1 &
      server=$!
      for _ in $(seq 100); do curl -sf -o /dev/null "$url" && break; sleep 0.05; done
      [ "$(curl -s "$url" | wc -c)" = 100 ] || { echo "bad body from $shape" >&2; exit 1; }
      wrk -t"$t" -c"$c" -d"$WARM"s "$url" >/dev/null
      before=$(ticks $server); obefore=$(others); sbefore=$(steal)
      res=$(wrk -t"$t" -c"$c" -d"$DUR"s --latency "$url")
      after=$(ticks $server); oafter=$(others); safter=$(steal)
      kill -TERM $server; wait $server; server=
      reqs=$(echo "$res" | awk '/requests in/{print $1}')
      rps=$(echo "$res" | awk '/Requests\/sec/{print $2}')
      p50=$(to_us "$(echo "$res" | awk '$1=="50%"{print $2}')")
      p99=$(to_us "$(echo "$res" | awk '$1=="99%"{print $2}')")
      non2xx=$(echo "$res" | awk '/Non-2xx/{print $NF}'); non2xx=${non2xx:-0}
      cpu=$(awk -v a="$before" -v b="$after" -v hz="$hz" -v n="$reqs" 'BEGIN{printf "%.2f", (b-a)/hz*1e6/n}')
      other=$(awk -v a="$obefore" -v b="$oafter" -v hz="$hz" 'BEGIN{printf "%.1f", (b-a)/hz}')
      st=$(awk -v a="$sbefore" -v b="$safter" 'BEGIN{split(a,x," "); split(b,y," "); printf "%.1f", 100*(y[1]-x[1])/(y[2]-x[2])}')
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$rep" "$shape" "$t" "$c" "$reqs" "$rps" "$p50" "$p99" "$cpu" "$non2xx" "$other" "$st" | tee -a "$out"
    done
  done
done
