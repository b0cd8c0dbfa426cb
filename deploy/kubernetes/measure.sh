#!/usr/bin/env bash
# Measures what the Kubernetes manifests' resource requests and limits are
# taken from: the resident set (peak, VmHWM) and the CPU (user + system
# time from /proc/PID/stat, divided by the wall time) of each program, idle
# and under load, run as local processes on loopback ports.
#
#   bash deploy/kubernetes/measure.sh            # about 2 minutes
#   DURATION=30 CONNS=128 bash deploy/kubernetes/measure.sh
#
# It starts redis-server (appendonly, as in the manifests), three backends
# (:5100-5102), a dispatcher as the base runs it (redirect, round robin,
# ROTATION=redis, :5110) and one as the proxy overlay runs it (MODE=proxy,
# STRATEGY=least-conn, :5111), then drives each dispatcher in turn with
# `wrk -t2 -c$CONNS -d$DURATION` (Debian packages wrk, redis-server, time). The
# proxy run also loads the backends, each a third of it. Everything stops
# when the script ends. docs/kubernetes.md has the numbers of one run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
DURATION=${DURATION:-20}
CONNS=${CONNS:-64}
IDLE=${IDLE:-10}
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

for p in backend seeder dispatcher; do
  (cd "$p" && GOWORK=off go build -o "$tmp/$p" .)
done

start() { # name, then the command; its pid goes to $tmp/name.pid
  local name=$1
  shift
  "$@" >"$tmp/$name.log" 2>&1 &
  pids+=($!)
  echo $! >"$tmp/$name.pid"
}
pid() { cat "$tmp/$1.pid"; }

start redis redis-server --port 0 --unixsocket "$tmp/redis.sock" --appendonly yes --dir "$tmp" --save ''
for i in 0 1 2; do
  start "backend$i" env PORT=$((5100 + i)) BACKEND_NAME="backend$i" "$tmp/backend"
done
redis_url="unix://$tmp/redis.sock"
for _ in $(seq 50); do [ -S "$tmp/redis.sock" ] && break; sleep 0.1; done
REDIS_URL=$redis_url "$tmp/seeder" seed http://127.0.0.1:5100 http://127.0.0.1:5101 http://127.0.0.1:5102 >/dev/null
start redirect env REDIS_URL="$redis_url" PORT=5110 ADMIN_PORT=5120 LOG_LEVEL=warn "$tmp/dispatcher"
start proxy env REDIS_URL="$redis_url" PORT=5111 ADMIN_PORT=5121 LOG_LEVEL=warn MODE=proxy STRATEGY=least-conn "$tmp/dispatcher"
for port in 5120 5121; do
  for _ in $(seq 50); do curl -fso /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
done

# The seeder runs once per rollout, as a Job: its peak resident set.
seeder_kib=$(REDIS_URL=$redis_url /usr/bin/env time -f %M "$tmp/seeder" seed http://127.0.0.1:5100 http://127.0.0.1:5101 http://127.0.0.1:5102 2>&1 >/dev/null | tail -1)

hz=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
procs=(redis backend0 redirect proxy)

# window LABEL SECONDS [wrk URL]: CPU used by each process over the window,
# in cores (CPU seconds per second), and the peak resident set so far.
window() {
  local label=$1 secs=$2 url=${3:-}
  declare -A before
  for p in "${procs[@]}"; do before[$p]=$(cpu_ticks "$(pid "$p")"); done
  local t0=$SECONDS
  if [ -n "$url" ]; then
    wrk -t2 -c"$CONNS" -d"${secs}s" "$url" | awk '/Requests\/sec/ { printf "    %s\n", $0 }'
  else
    sleep "$secs"
  fi
  local wall=$((SECONDS - t0))
  for p in "${procs[@]}"; do
    local now
    now=$(cpu_ticks "$(pid "$p")")
    awk -v l="$label" -v p="$p" -v ticks=$((now - before[$p])) -v hz="$hz" -v wall="$wall" \
      -v rss="$(rss_kib "$(pid "$p")")" -v hwm="$(hwm_kib "$(pid "$p")")" 'BEGIN {
      printf "%-9s %-9s cpu %5.3f cores  rss %6.1f MiB  peak rss %6.1f MiB\n", l, p, ticks / hz / wall, rss / 1024, hwm / 1024 }'
  done
}

echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg), wrk -t2 -c$CONNS, ${DURATION}s per run"
window idle "$IDLE"
window redirect "$DURATION" http://127.0.0.1:5110/
window proxy "$DURATION" http://127.0.0.1:5111/
awk -v k="$seeder_kib" 'BEGIN { printf "seeder    one seed: peak rss %.1f MiB\n", k / 1024 }'
