#!/usr/bin/env bash
# A local stand-in for python:3.11-slim-bookworm, for building the images
# where no registry can be pulled from: Debian bookworm (its python3 is 3.11,
# like the image users pull) debootstrapped from the Debian mirror and
# committed with buildah. Idempotent: an image already built by this very
# script (its hash is a label) is kept, so a second run takes a second.
#
#   scripts/base-image.sh [TAG]     default localhost/vigil-python:3.11-bookworm
#
# Environment: DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail

TAG=${1:-localhost/vigil-python:3.11-bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
# "stable" is trixie (Python 3.13) now; the images are built on 3.11.
SUITE=bookworm
SCRIPT_HASH=$(sha256sum "$0" | cut -c1-16)

if [ "$(buildah inspect --type image --format '{{index .ImageAnnotations "org.vigil.base-script"}}{{index .OCIv1.Config.Labels "org.vigil.base-script"}}' "$TAG" 2>/dev/null)" = "$SCRIPT_HASH" ]; then
  echo "base image $TAG is up to date"
  exit 0
fi

work=$(mktemp -d /var/tmp/vigil-base.XXXXXX)
ctr=
cleanup() {
  [ -n "$ctr" ] && buildah rm "$ctr" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# minbase: essential packages only. python3-venv brings ensurepip's wheels,
# which the Dockerfile's venvs need; python-is-python3 gives `python`, as in
# the python image; ca-certificates for pip's HTTPS.
debootstrap --variant=minbase \
  --include=python3,python3-venv,python-is-python3,ca-certificates \
  "$SUITE" "$work/rootfs" "$MIRROR"

version=$(chroot "$work/rootfs" python -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$version" != 3.11 ]; then
  echo "Debian $SUITE from $MIRROR has Python $version, not 3.11" >&2
  exit 1
fi

# What python:slim leaves out too: package lists, docs, man pages, caches.
chroot "$work/rootfs" apt-get clean
rm -rf "$work"/rootfs/var/lib/apt/lists/* "$work"/rootfs/usr/share/{doc,man,info}/* \
  "$work"/rootfs/var/cache/debconf/*-old "$work"/rootfs/var/log/*.log
find "$work/rootfs/usr/lib/python3.11" -name __pycache__ -prune -exec rm -rf {} +

tar --numeric-owner -C "$work/rootfs" -cf "$work/rootfs.tar" .
rm -rf "$work/rootfs"
ctr=$(buildah from scratch)
buildah add "$ctr" "$work/rootfs.tar" /
buildah config \
  --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env LANG=C.UTF-8 \
  --cmd python3 \
  --label "org.vigil.base-script=$SCRIPT_HASH" \
  --label "org.vigil.base-suite=$SUITE" \
  "$ctr"
buildah commit --rm "$ctr" "$TAG"
ctr=
buildah images "$TAG"
