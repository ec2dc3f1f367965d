#!/usr/bin/env bash
# A Docker engine and a Debian base image on a machine without a container registry.
# Idempotent: each step is skipped when its result is already there. Used by `make docker-engine`.
#
#   AGENTFLOW_BASE_IMAGE  the base image to create (default local/bookworm-slim)
#
# Steps: Docker's engine from Debian (docker.io), dockerd in the background, Compose v1 from
# Debian (docker-compose 1.29: `docker compose`, the v2 plugin, is not packaged in bookworm),
# and a bookworm base image made with debootstrap and `docker import`.
set -euo pipefail

BASE_IMAGE="${AGENTFLOW_BASE_IMAGE:-local/bookworm-slim}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

step() { printf 'docker-engine: %s\n' "$*"; }

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    $SUDO apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if docker info >/dev/null 2>&1; then
  step "engine: already running"
else
  if ! command -v dockerd >/dev/null 2>&1; then
    step "engine: installing docker.io (apt)"
    apt_install docker.io
  fi
  step "engine: starting dockerd (log in /tmp/dockerd.log)"
  $SUDO sh -c 'nohup dockerd >/tmp/dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  if ! docker info >/dev/null 2>&1; then
    step "engine: dockerd did not answer within 30 s; see /tmp/dockerd.log:" >&2
    tail -n 20 /tmp/dockerd.log >&2 || true
    exit 1
  fi
  step "engine: ready ($(docker info -f '{{.ServerVersion}}'))"
fi

if command -v docker-compose >/dev/null 2>&1; then
  step "compose: already installed ($(docker-compose version --short 2>/dev/null || echo '?'))"
else
  step "compose: installing docker-compose (apt)"
  apt_install docker-compose
fi

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  step "base image: $BASE_IMAGE already there"
else
  if ! command -v debootstrap >/dev/null 2>&1; then
    step "base image: installing debootstrap (apt)"
    apt_install debootstrap
  fi
  rootfs="$(mktemp -d /tmp/bookworm-rootfs.XXXXXX)"
  trap '$SUDO rm -rf "$rootfs"' EXIT
  step "base image: debootstrap --variant=minbase bookworm into $rootfs"
  $SUDO debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >/tmp/debootstrap.log 2>&1 || {
    tail -n 20 /tmp/debootstrap.log >&2
    exit 1
  }
  step "base image: docker import as $BASE_IMAGE"
  $SUDO tar -C "$rootfs" \
    --exclude='./var/cache/apt/archives/*.deb' --exclude='./var/lib/apt/lists/*' \
    --exclude='./usr/share/doc/*' --exclude='./usr/share/man/*' --exclude='./usr/share/locale/*' \
    -c . | docker import - "$BASE_IMAGE" >/dev/null
  step "base image: $BASE_IMAGE ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE") bytes)"
fi
