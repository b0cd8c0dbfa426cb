#!/usr/bin/env bash
# Builds local stand-ins for the base images the project normally pulls
# (golang, redis, distroless). The CI machine is air-gapped from every container
# registry, so nothing can be pulled: each image is assembled from files that
# are already on the host and loaded with `docker import` (no registry needed).
#
# stdout: only `export NAME=value` lines, meant for `eval` by .ci/run:
#           GO_IMAGE=spread-local/go:ci
#           REDIS_IMAGE=spread-local/redis:ci
#           RUNTIME_IMAGE=scratch
# stderr: progress logs.
#
# With --env FILE (what `make standins` does), it writes the three as
# NAME=value lines into FILE instead, a Compose .env file: lines of FILE that
# set other variables are kept, earlier values of these three are replaced.
# Compose reads .env in every shell, so no export is needed.
#
# A variable the caller already set (GO_IMAGE, REDIS_IMAGE, RUNTIME_IMAGE) is
# respected: that stand-in is not built and the given value is echoed back.
#
# Idempotent: each image is also tagged with a hash of its inputs, its recipe
# included (spread-local/NAME:in-<hash>); when that tag exists the build is skipped and
# only the :ci tag is (re)pointed at it.
#
# Host prerequisites (installed by .ci/run): docker, go in /usr/local/go,
# redis-server + redis-cli (Debian packages redis-server, redis-tools), and a
# static /bin/busybox (Debian package busybox-static).
set -euo pipefail
umask 022   # modes in the images must not depend on the caller's umask

env_file=
case "${1:-}" in
  --env) [ -n "${2:-}" ] || { echo "usage: $0 [--env FILE]" >&2; exit 2; }; env_file=$2 ;;
  "") ;;
  *) echo "usage: $0 [--env FILE]" >&2; exit 2 ;;
esac

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Modules whose dependencies get embedded in the Go image: every top-level
# directory with a go.mod (backend, dispatcher, seeder, internal, ...) except
# e2e, whose dependency tree (compose, buildkit, ...) is huge and which is never
# built inside an image.
image_modules=()
for f in "$repo_root"/*/go.mod; do
  [ -f "$f" ] || continue
  m=$(basename "$(dirname "$f")")
  [ "$m" = e2e ] || image_modules+=("$m")
done

log() { printf '[standins +%ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

work=$(mktemp -d /tmp/spread-standins.XXXXXX)
# Go makes extracted module dirs read-only; make them writable so rm succeeds.
trap 'chmod -R u+w "$work" 2>/dev/null || true; rm -rf "$work"' EXIT

# Deterministic tar of a staging dir: root-owned, fixed mtime, sorted names, so
# identical inputs give identical layers.
tar_flags=(--owner=0 --group=0 --numeric-owner --sort=name --mtime=@0)

# image_exists REF -> success if the local engine has REF.
image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# finish REPO HASH: point REPO:ci at REPO:in-HASH and drop older in-* tags.
finish() {
  local repo=$1 hash=$2 old
  docker tag "$repo:in-$hash" "$repo:ci"
  for old in $(docker images "$repo" --format '{{.Tag}}' | grep '^in-' || true); do
    [ "$old" = "in-$hash" ] || docker rmi "$repo:$old" >/dev/null 2>&1 || true
  done
}

# add_busybox STAGE: static busybox as /bin/busybox plus the equivalent of
# `busybox --install -s`, done at tarball time: one symlink in /bin per applet
# (sh, ls, cat, mkdir, cp, mv, rm, env, nc, ...).
add_busybox() {
  local stage=$1 busybox=/bin/busybox applet
  [ -x "$busybox" ] || die "$busybox not found (apt-get install busybox-static)"
  mkdir -p "$stage/bin"
  cp -L "$busybox" "$stage/bin/busybox"
  for applet in $("$busybox" --list); do
    case $applet in busybox|*/*) continue ;; esac
    ln -s busybox "$stage/bin/$applet"
  done
}

# ---------------------------------------------------------------------------
# Redis: Debian's redis-server / redis-cli plus their shared libraries.
# ---------------------------------------------------------------------------
build_redis() {
  local repo=spread-local/redis
  local server cli f lib hash stage
  # On Debian /usr/bin/redis-server is a symlink to redis-check-rdb (redis picks
  # its mode from argv[0]); resolve it and store a real file under the expected name.
  server=$(readlink -f "$(command -v redis-server)") || die "redis-server not found (apt-get install redis-server)"
  cli=$(readlink -f "$(command -v redis-cli)") || die "redis-cli not found (apt-get install redis-tools)"

  # Every library ldd lists for either binary, plus the dynamic loader (the
  # only absolute path in ldd's output without "=>").
  local libs
  libs=$( { ldd "$server"; ldd "$cli"; } | awk '
      $2 == "=>" && $3 ~ /^\// { print $3 }
      $1 ~ /^\// { print $1 }' | sort -u)
  [ -n "$libs" ] || die "ldd found no libraries for $server"

  # The recipe is this function and add_busybox, not the whole script, so
  # that editing the Go recipe does not rebuild this image, nor the reverse.
  hash=$( { declare -f build_redis add_busybox; sha256sum "$server" "$cli" /bin/busybox;
            for lib in $libs; do echo "$lib"; sha256sum "$(readlink -f "$lib")"; done; } \
          | sha256sum | cut -c1-16)
  if image_exists "$repo:in-$hash"; then
    log "redis: $repo:in-$hash already present, reusing"
    finish "$repo" "$hash"; return
  fi

  stage=$work/redis
  mkdir -p "$stage/usr/bin" "$stage/data" "$stage/tmp"
  chmod 1777 "$stage/tmp"; chmod 0777 "$stage/data"
  cp -L "$server" "$stage/usr/bin/redis-server"
  cp -L "$cli" "$stage/usr/bin/redis-cli"
  # A shell is not needed to serve, but lets `docker exec ... sh` and
  # CMD-SHELL healthchecks work, and testcontainers' port wait strategy uses
  # /bin/sh for its in-container check.
  add_busybox "$stage"
  # Entry point like the official image's: protected mode stays off even when
  # a compose file or test overrides the command (e.g. `redis-server
  # --appendonly yes`), unless the command sets protected-mode itself. With
  # it on, every connection from another container would be refused.
  mkdir -p "$stage/usr/local/bin"
  cat >"$stage/usr/local/bin/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
set -e
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then
  case " $* " in *" --protected-mode "*) ;; *) set -- "$@" --protected-mode no ;; esac
fi
exec "$@"
ENTRYPOINT
  chmod 0755 "$stage/usr/local/bin/docker-entrypoint.sh"
  for lib in $libs; do
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"   # library symlinks become real files at ldd's path
  done

  local t0=$SECONDS
  # Like the official image: redis-server's built-in defaults, so RDB
  # snapshots (and one at shutdown) go to /data, a volume, and the data
  # survives `docker compose restart redis`; the entry point turns protected
  # mode off, since the other containers of a compose project reach this
  # redis over the Docker network without a password.
  tar -C "$stage" -c "${tar_flags[@]}" . | docker import \
      --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin' \
      --change 'VOLUME /data' \
      --change 'WORKDIR /data' \
      --change 'EXPOSE 6379' \
      --change 'ENTRYPOINT ["docker-entrypoint.sh"]' \
      --change 'CMD ["redis-server"]' \
      - "$repo:in-$hash" >/dev/null
  log "redis: imported $repo:in-$hash in $((SECONDS - t0)) s"
  finish "$repo" "$hash"
}

# ---------------------------------------------------------------------------
# Go: the host toolchain, CA bundle, busybox as /bin/sh (for shell-form RUN),
# and a file:// module proxy holding the modules' dependencies, so that
# `go mod download` inside `docker build` is fast and works offline (the
# containers' route to proxy.golang.org is slow: 70-100 s for echo + go-redis).
# ---------------------------------------------------------------------------
build_go() {
  local repo=spread-local/go
  local goroot=/usr/local/go
  local go=$goroot/bin/go
  local busybox=/bin/busybox
  local ca=/etc/ssl/certs/ca-certificates.crt
  [ -x "$go" ] || die "$go not found"
  [ -x "$busybox" ] || die "$busybox not found (apt-get install busybox-static)"
  [ -f "$ca" ] || die "$ca not found (apt-get install ca-certificates)"

  # Module files that decide what goes into /goproxy.
  local modfiles=() m f
  for m in "${image_modules[@]}"; do
    for f in go.mod go.sum; do
      [ -f "$repo_root/$m/$f" ] && modfiles+=("$repo_root/$m/$f")
    done
  done

  local hash
  hash=$( { declare -f build_go add_busybox; sha256sum "$go" "$busybox" "$ca";
            cat "$goroot/VERSION";
            for f in "${modfiles[@]}"; do echo "${f#"$repo_root"/}"; cat "$f"; done; } \
          | sha256sum | cut -c1-16)
  if image_exists "$repo:in-$hash"; then
    log "go: $repo:in-$hash already present, reusing"
    finish "$repo" "$hash"; return
  fi

  local stage=$work/go
  mkdir -p "$stage/bin" "$stage/etc/ssl/certs" "$stage/tmp" "$stage/root" \
           "$stage/go/bin" "$stage/src" "$stage/goproxy"
  chmod 1777 "$stage/tmp"
  cp -L "$ca" "$stage/etc/ssl/certs/ca-certificates.crt"
  add_busybox "$stage"

  # Fill a private module cache from the host: GOPROXY prefers the host's own
  # cache (fast, offline) and falls back to the normal proxy. Work on copies of
  # go.mod/go.sum (same relative layout, so `replace ../x` works) so the work
  # tree is never modified. Failures only warn: the image still works, the
  # missing modules are then fetched from the network inside the build.
  local src=$work/modsrc modcache=$work/modcache complete=1
  local host_cache host_proxy
  host_cache=$("$go" env GOMODCACHE)/cache/download
  host_proxy=$("$go" env GOPROXY)
  local proxy=$host_proxy
  [ -d "$host_cache" ] && proxy="file://$host_cache,$host_proxy"
  for m in "$repo_root"/*/; do
    m=$(basename "$m")
    [ -f "$repo_root/$m/go.mod" ] || continue
    mkdir -p "$src/$m"
    cp "$repo_root/$m/go.mod" "$src/$m/"
    [ -f "$repo_root/$m/go.sum" ] && cp "$repo_root/$m/go.sum" "$src/$m/"
  done
  local t0=$SECONDS
  for m in "${image_modules[@]}"; do
    [ -f "$src/$m/go.mod" ] || continue
    log "go: downloading dependencies of $m"
    if ! (cd "$src/$m" && GOWORK=off GOFLAGS=-mod=mod GOMODCACHE=$modcache \
            GOPROXY=$proxy GOTOOLCHAIN=local "$go" mod download) >&2; then
      log "WARNING: go mod download failed for $m; the image will lack some modules"
      complete=0
    fi
  done
  log "go: module download took $((SECONDS - t0)) s"
  if [ -d "$modcache/cache/download" ]; then
    # sumdb/ is the checksum-db cache, not part of the proxy protocol.
    (cd "$modcache/cache/download" && tar -c --exclude=./sumdb . ) | tar -C "$stage/goproxy" -x
  fi

  t0=$SECONDS
  # GOROOT goes in straight from the host (minus its own test suite, 21 MB);
  # the staging dir adds everything else.
  tar -c "${tar_flags[@]}" --exclude=usr/local/go/test \
      -C / usr/local/go -C "$stage" . | docker import \
      --change 'ENV PATH=/usr/local/go/bin:/go/bin:/usr/local/bin:/usr/bin:/bin' \
      --change 'ENV HOME=/root' \
      --change 'ENV GOPATH=/go' \
      --change 'ENV GOTOOLCHAIN=local' \
      --change 'ENV GOPROXY=file:///goproxy,https://proxy.golang.org,direct' \
      --change 'ENV GOFLAGS=-modcacherw' \
      --change 'WORKDIR /src' \
      --change 'CMD ["/bin/sh"]' \
      - "$repo:in-$hash" >/dev/null
  log "go: imported $repo:in-$hash in $((SECONDS - t0)) s ($(du -sh "$stage/goproxy" | cut -f1) of modules embedded)"
  finish "$repo" "$hash"
  if [ "$complete" = 0 ]; then
    # Keep :ci but drop the content tag, so the next run tries again.
    docker rmi "$repo:in-$hash" >/dev/null
  fi
}

command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "no Docker daemon answers (start dockerd first)"

if [ -n "${REDIS_IMAGE:-}" ]; then
  log "redis: REDIS_IMAGE=$REDIS_IMAGE given, not building"
else
  build_redis; REDIS_IMAGE=spread-local/redis:ci
fi
if [ -n "${GO_IMAGE:-}" ]; then
  log "go: GO_IMAGE=$GO_IMAGE given, not building"
else
  build_go; GO_IMAGE=spread-local/go:ci
fi
# The Dockerfile's runtime stage adds CA certs and a numeric non-root USER
# itself, so the built-in empty `scratch` needs no stand-in.
RUNTIME_IMAGE=${RUNTIME_IMAGE:-scratch}

if [ -z "$env_file" ]; then
  printf 'export GO_IMAGE=%q\n' "$GO_IMAGE"
  printf 'export RUNTIME_IMAGE=%q\n' "$RUNTIME_IMAGE"
  printf 'export REDIS_IMAGE=%q\n' "$REDIS_IMAGE"
  exit 0
fi
# Image names hold no spaces, quotes or '#', so NAME=value needs no quoting
# in any Compose version's .env syntax.
tmp=$(mktemp "$env_file.XXXXXX")
chmod 0644 "$tmp"
{ [ -f "$env_file" ] && grep -Ev '^[[:space:]]*(export[[:space:]]+)?(GO_IMAGE|RUNTIME_IMAGE|REDIS_IMAGE)=' "$env_file" || true
  echo "GO_IMAGE=$GO_IMAGE"
  echo "RUNTIME_IMAGE=$RUNTIME_IMAGE"
  echo "REDIS_IMAGE=$REDIS_IMAGE"
} >"$tmp"
mv "$tmp" "$env_file"
log "wrote GO_IMAGE, RUNTIME_IMAGE and REDIS_IMAGE to $env_file"
