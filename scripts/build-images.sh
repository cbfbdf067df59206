#!/usr/bin/env bash
# Build targets of the Dockerfile with buildah (no Docker engine needed), FROM
# the local base of scripts/base-image.sh unless PYTHON_IMAGE names another.
#
#   scripts/build-images.sh operator [inference]
#
# Tags localhost/vigil-<target>:dev (VIGIL_IMAGE_TAG overrides "dev"). Layers
# are cached by buildah, so an unchanged rebuild takes seconds. Docker format,
# or the HEALTHCHECKs are dropped; chroot isolation and the host's network, as
# a sandbox or CI container allows (no nested cgroups or network namespaces).
#
# pip inside the build reaches what pip here reaches: the pip configuration
# files of this machine, and the local paths they name (file:// indexes,
# find-links, constraints, a proxy's CA bundle), are mounted read-only into
# the build's RUN steps, never copied into a layer. Without any, pip uses PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE=${PYTHON_IMAGE:-localhost/vigil-python:3.11-bookworm}
TAG=${VIGIL_IMAGE_TAG:-dev}
PYTHON=${PYTHON:-python3}
[ $# -gt 0 ] || set -- operator inference

if [ -z "${PYTHON_IMAGE:-}" ]; then
  scripts/base-image.sh "$BASE"
fi

volumes=()
add_volume() {  # host path [container path]
  local spec="--volume=$1:${2:-$1}:ro"
  for v in "${volumes[@]}"; do [ "$v" = "$spec" ] && return; done
  volumes+=("$spec")
}
for f in /etc/pip.conf /etc/xdg/pip/pip.conf; do
  [ -f "$f" ] && add_volume "$f"
done
[ -f "$HOME/.config/pip/pip.conf" ] && add_volume "$HOME/.config/pip/pip.conf" /root/.config/pip/pip.conf
while read -r path; do
  path=${path%/}
  # A PEP 503 index folder links its files relative to it (../../files/...).
  [ "$(basename "$path")" = simple ] && path=$(dirname "$path")
  case "$path" in /*) [ -e "$path" ] && add_volume "$path" ;; esac
done < <("$PYTHON" -m pip config list 2>/dev/null |
  sed -E "s/^[^=]*='(.*)'$/\1/" | tr ' ' '\n' | sed 's|^file://||')

for target in "$@"; do
  start=$(date +%s)
  buildah bud --format docker --layers --isolation chroot --network host --target "$target" \
    --build-arg "PYTHON_IMAGE=$BASE" "${volumes[@]}" \
    -t "localhost/vigil-$target:$TAG" .
  image=localhost/vigil-$target:$TAG
  echo "built $image in $(($(date +%s) - start)) s:" \
    "$(podman image inspect --format '{{.Size}} bytes in {{len .RootFS.Layers}} layers' "$image")"
  podman history --format '{{.Size}}\t{{.CreatedBy}}' "$image" | grep -v '^0 *B' | cut -c1-100
done
