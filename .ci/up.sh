#!/usr/bin/env bash
# `make up`: build the images, start the compose stack in the background, and
# return only once every service is ready, so that the first request to any
# published port is answered.
#
#   COMPOSE           the compose command: `docker compose` (v2) or
#                     `docker-compose` (v1); the Makefile picks the one installed
#   COMPOSE_PROFILES  compose's own variable, read by both versions: the
#                     profiles to start as well (many, proxy, lab)
#   UP_TIMEOUT        seconds to wait for readiness (default 180)
#
# Ready means: every container with a healthcheck is healthy (the dispatchers'
# checks /readyz, the backends' /healthz, Redis answers PING), every other one
# is running, and one-shot jobs (the seeders) exited 0. Compose v2 waits for
# this itself (`up --wait`); v1 has no --wait, so this script polls the
# containers' state until it holds, and fails, naming the container, as soon
# as one is unhealthy or exited with another status.
#
# A machine that cannot pull: when `up` fails and a base image that compose
# needs (GO_IMAGE, RUNTIME_IMAGE, REDIS_IMAGE, as compose resolves them: the
# environment, else .env, else compose.yaml's default) is neither here nor
# pullable, it builds local stand-ins for them as `make standins` does
# (.ci/standins.sh, which writes their names to .env) and runs `up` once more.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

read -r -a compose <<<"${COMPOSE:-docker-compose}"
timeout=${UP_TIMEOUT:-180}
case $timeout in '' | *[!0-9]*) echo "make up: UP_TIMEOUT must be a whole number of seconds, got \"$timeout\"" >&2; exit 2 ;; esac

log() { printf 'make up: %s\n' "$*" >&2; }

# wait_flag: --wait where `up` has it (Compose v2.1 and later), else nothing.
wait_flag=()
if "${compose[@]}" up --help 2>/dev/null | grep -q -- '--wait'; then
  wait_flag=(--wait)
fi

# (${a[@]+"${a[@]}"}: an empty array is an unbound variable to bash before
# 4.4, macOS's /bin/bash included.)
up() {
  log "${compose[*]} up --build -d ${wait_flag[*]:-}"
  "${compose[@]}" up --build -d ${wait_flag[@]+"${wait_flag[@]}"}
}

# base_image NAME: the image compose.yaml's ${NAME:-default} resolves to.
base_image() {
  local name=$1 v=
  if [ -n "${!name:-}" ]; then
    echo "${!name}"
    return
  fi
  if [ -f .env ]; then
    v=$(sed -n "s/^[[:space:]]*\(export[[:space:]]\{1,\}\)\{0,1\}$name=//p" .env | tail -n 1 | tr -d "\"'")
  fi
  if [ -n "$v" ]; then
    echo "$v"
    return
  fi
  sed -n "s/.*\${$name:-\([^}]*\)}.*/\1/p" compose.yaml | head -n 1
}

# unpullable: prints the first base image that is neither present nor
# pullable, and succeeds; fails when every one is present or could be pulled.
unpullable() {
  local name img
  for name in GO_IMAGE RUNTIME_IMAGE REDIS_IMAGE; do
    img=$(base_image "$name")
    [ -n "$img" ] && [ "$img" != scratch ] || continue   # scratch is built in
    docker image inspect "$img" >/dev/null 2>&1 && continue
    log "checking whether $img can be pulled"
    if ! docker pull -q "$img" >/dev/null 2>&1; then
      echo "$img"
      return 0
    fi
  done
  return 1
}

# wait_ready: poll until every container of the project is ready (above).
wait_ready() {
  local deadline=$((SECONDS + timeout)) ids id name state health code pending failed out
  log "waiting for every service to be ready (up to $timeout s)"
  while :; do
    ids=$("${compose[@]}" ps -q)
    pending=() failed=()
    for id in $ids; do
      read -r name state health code < <(docker inspect -f \
        '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$id" 2>/dev/null) ||
        continue # removed since ps listed it
      name=${name#/}
      case $state/$health in
        running/healthy | running/none) ;;
        exited/*) [ "$code" = 0 ] || failed+=("$name exited with status $code") ;;
        */unhealthy)
          out=$(docker inspect -f '{{with .State.Health}}{{range .Log}}{{.Output}}{{end}}{{end}}' "$id" | tail -n 1)
          failed+=("$name is unhealthy${out:+: $out}") ;;
        *) pending+=("$name") ;;
      esac
    done
    if [ "${#failed[@]}" -gt 0 ]; then
      printf 'make up: %s\n' "${failed[@]}" >&2
      log "see \`${compose[*]} logs\`"
      return 1
    fi
    if [ -n "$ids" ] && [ "${#pending[@]}" -eq 0 ]; then
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "not ready after $timeout s: ${pending[*]:-no containers}"
      return 1
    fi
    sleep 1
  done
}

ready() {
  if [ "${#wait_flag[@]}" -eq 0 ]; then
    wait_ready || return 1
  fi
  log "ready: http://localhost/ (dashboard: http://localhost:8080/)"
}

if up; then
  ready
  exit
fi
if ! img=$(unpullable); then
  exit 1 # every base image is here: `up` failed for another reason, printed above
fi
log "cannot pull $img: building local stand-ins for the base images (as \`make standins\` does), then trying again"
bash .ci/standins.sh --env .env
# Compose reads .env, but the environment wins over it: a variable set there
# is what standins.sh respected and kept.
up
ready
