#!/usr/bin/env bash
# Run an image of scripts/build-images.sh the way the chart runs it: uid/gid
# 65532, a read-only root filesystem with a tmpfs on /tmp only (the chart's
# emptyDir), no capabilities, no privilege escalation. The host's network,
# so a loopback API server or a gRPC client on the host reaches it.
#
#   KUBECONFIG=~/.kube/config scripts/run-image.sh operator [ARGS...]
#   VIGIL_MODEL=fabric.vigil  scripts/run-image.sh inference [ARGS...]
#
# The operator gets $KUBECONFIG (one file, credentials embedded) read-only at
# /etc/vigil/kubeconfig; the inference unit gets $VIGIL_MODEL read-only at
# /models/model.vigil, where the image's default command serves it. ARGS
# replace the image's command (`vigil` is the entrypoint; VIGIL_ENTRYPOINT
# replaces it). Runs in the foreground, signals passed on to the container;
# VIGIL_CONTAINER_NAME names it, VIGIL_IMAGE picks another image.
#
# What works in this sandbox (a VM, root, cgroup v1 with one controller on
# v2): podman with runc. crun refuses "cgroups in hybrid mode"; setting
# RLIMIT_NPROC to the host's hard limit is refused, hence the lower limits.
set -euo pipefail

target=${1:?usage: run-image.sh operator|inference [ARGS...]}
shift
image=${VIGIL_IMAGE:-localhost/vigil-$target:${VIGIL_IMAGE_TAG:-dev}}
opts=(
  --rm --runtime "${VIGIL_OCI_RUNTIME:-runc}" --network host
  --user 65532:65532 --read-only --read-only-tmpfs=false --tmpfs /tmp:rw,mode=1777
  --cap-drop all --security-opt no-new-privileges
  --ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit nproc=4096:4096
)
[ -n "${VIGIL_CONTAINER_NAME:-}" ] && opts+=(--name "$VIGIL_CONTAINER_NAME" --replace)
[ -n "${VIGIL_ENTRYPOINT:-}" ] && opts+=(--entrypoint "$VIGIL_ENTRYPOINT")

case "$target" in
  operator)
    if [ -n "${KUBECONFIG:-}" ]; then
      opts+=(--volume "$(realpath "$KUBECONFIG"):/etc/vigil/kubeconfig:ro"
        --env KUBECONFIG=/etc/vigil/kubeconfig)
    fi
    ;;
  inference)
    model=${VIGIL_MODEL:?VIGIL_MODEL names the .vigil artifact to serve}
    opts+=(--volume "$(realpath "$model"):/models/model.vigil:ro")
    ;;
  *)
    echo "unknown image target: $target" >&2
    exit 2
    ;;
esac
exec podman run "${opts[@]}" "$image" "$@"
