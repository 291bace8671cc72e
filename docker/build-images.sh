#!/usr/bin/env bash
# Build the compose lab's images (docker/docker-compose.yml) from the repository:
#   localhost/bridge-freeswitch:1.10.12   docker/freeswitch.Dockerfile (compiles FreeSWITCH: 6-11 min on 2 cores)
#   localhost/bridge:lab                  docker/Dockerfile (the bridge, the demo agent, lab-setup)
#   localhost/bridge-lab-redis:latest     docker/redis.Dockerfile (Debian's redis-server)
#   localhost/bridge-lab-softphone:latest docker/softphone.Dockerfile (baresip + SIPp)
#
#   docker/build-images.sh [IMAGE...]     # IMAGE: freeswitch bridge redis softphone (default: all)
#
#   ENGINE          podman (default) or docker (docker buildx, for --build-context)
#   BASE_IMAGE      the Debian 12 base of every image. Default: localhost/debian:bookworm when that
#                   image exists or can be made here (mmdebstrap, no registry needed), else
#                   debian:bookworm-slim (pulled from a registry)
#   FREESWITCH_SRC  the source tarballs (default ../shared/freeswitch-src beside the repo)
#   PIP_CERT / SSL_CERT_FILE   a CA bundle for pip behind a TLS-intercepting proxy: passed to the
#                   bridge image's build as the optional secret `ca-bundle`
# Builds use the host's network (--network host), which reaches Debian's mirror and PyPI.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"
ENGINE=${ENGINE:-podman}
FREESWITCH_SRC=${FREESWITCH_SRC:-$REPO/../shared/freeswitch-src}
LOCAL_BASE=localhost/debian:bookworm

say() { printf '==> %s\n' "$*"; }
die() { printf 'build-images: error: %s\n' "$*" >&2; exit 1; }

image_exists() { "$ENGINE" image inspect "$1" >/dev/null 2>&1; }

# The one-time base image for machines without a registry: Debian 12 from Debian's packages.
make_local_base() {
  command -v mmdebstrap >/dev/null || return 1
  [ "$ENGINE" = podman ] || [ "$ENGINE" = docker ] || return 1
  local tar
  tar=$(mktemp -d)/bookworm.tar
  say "making $LOCAL_BASE with mmdebstrap (about 30 s)"
  mmdebstrap --quiet --variant=minbase --include=ca-certificates bookworm "$tar"
  "$ENGINE" import "$tar" "$LOCAL_BASE" >/dev/null
  rm -rf "$(dirname "$tar")"
}

if [ -z "${BASE_IMAGE:-}" ]; then
  if image_exists "$LOCAL_BASE" || make_local_base; then
    BASE_IMAGE=$LOCAL_BASE
  else
    BASE_IMAGE=debian:bookworm-slim
  fi
fi
say "base image $BASE_IMAGE ($ENGINE)"

common=(--network host --build-arg "BASE_IMAGE=$BASE_IMAGE" --ignorefile docker/lab.dockerignore)
if [ "$ENGINE" = docker ]; then
  # docker buildx has no --ignorefile (it would read docker/<Dockerfile>.dockerignore): it sends
  # the whole repository as the context, which works, only slower.
  common=(--network host --build-arg "BASE_IMAGE=$BASE_IMAGE")
  build=(docker buildx build --load)
else
  build=(podman build)
fi

build_one() {
  local name=$1 tag=$2 file=$3
  shift 3
  say "$name: $tag from $file"
  local start=$SECONDS
  "${build[@]}" "${common[@]}" "$@" -f "$file" -t "$tag" .
  say "$name: built in $((SECONDS - start)) s"
}

want=("$@")
[ ${#want[@]} -gt 0 ] || want=(redis bridge softphone freeswitch)
for w in "${want[@]}"; do
  case $w in
    freeswitch)
      [ -d "$FREESWITCH_SRC" ] || die "no FreeSWITCH sources at $FREESWITCH_SRC (set FREESWITCH_SRC)"
      build_one freeswitch localhost/bridge-freeswitch:1.10.12 docker/freeswitch.Dockerfile \
        --build-context "freeswitch-src=$(cd "$FREESWITCH_SRC" && pwd)"
      ;;
    bridge)
      secret=()
      for ca in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}"; do
        if [ -n "$ca" ] && [ -f "$ca" ]; then
          secret=(--secret "id=ca-bundle,src=$ca")
          break
        fi
      done
      build_one bridge localhost/bridge:lab docker/Dockerfile "${secret[@]}"
      ;;
    redis) build_one redis localhost/bridge-lab-redis:latest docker/redis.Dockerfile ;;
    softphone) build_one softphone localhost/bridge-lab-softphone:latest docker/softphone.Dockerfile ;;
    *) die "unknown image $w (freeswitch bridge redis softphone)" ;;
  esac
done
say "done (images: $ENGINE images | grep -E 'bridge|debian')"
