#!/usr/bin/env bash
# Build the app image with podman (make image / make image-test).
#
#   deploy/image/build.sh                       # here: base bootstrapped from Debian's packages, cached
#   BASE_IMAGE=python:3.11-slim deploy/image/build.sh   # where a registry is reachable: the public base
#
# Idempotent: installs the Debian packages it needs (apt-get, only those missing), gives podman the
# system-wide containers.conf setting this kind of machine needs, bootstraps and imports the base image
# once (the tarball is cached under $IMAGE_CACHE), then `podman build`s the Dockerfile.
# Why each step: docs/deploy.md ("Building the image with podman").
set -euo pipefail
cd "$(dirname "$0")/../.."

IMAGE=${IMAGE:-localhost/brandchat:test}
BASE_IMAGE=${BASE_IMAGE:-}
IMAGE_CACHE=${IMAGE_CACHE:-$HOME/.cache/brandchat-image}
LOCAL_BASE=localhost/brandchat-base:bookworm
RUNTIME=${PODMAN_RUNTIME:-runc}
CONTAINERS_CONF=/etc/containers/containers.conf

step() { printf '== %s (%ss)\n' "$1" "$SECONDS"; }

step "Debian packages"
need=()
for pkg in podman runc debootstrap uidmap slirp4netns fuse-overlayfs nginx-light; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
# nginx-light is only one way to have nginx: any installed nginx serves the load-balancer check.
if ((${#need[@]})) && [[ " ${need[*]} " == *" nginx-light "* ]] && command -v nginx >/dev/null; then
  need=("${need[@]/nginx-light/}")
  read -r -a need <<<"${need[*]}"
fi
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

step "containers.conf"
# The sandbox refuses the default ulimits podman gives a container (and crun; we pass --runtime runc).
# The setting belongs in the [containers] table of the system-wide file; add it only if absent.
mkdir -p "$(dirname "$CONTAINERS_CONF")"
touch "$CONTAINERS_CONF"
if ! grep -Eq '^[[:space:]]*default_ulimits[[:space:]]*=' "$CONTAINERS_CONF"; then
  if grep -Eq '^[[:space:]]*\[containers\]' "$CONTAINERS_CONF"; then
    sed -i -E '0,/^[[:space:]]*\[containers\]/s//[containers]\ndefault_ulimits = []/' "$CONTAINERS_CONF"
  else
    printf '\n[containers]\ndefault_ulimits = []\n' >>"$CONTAINERS_CONF"
  fi
fi

if [[ -z "$BASE_IMAGE" ]]; then
  BASE_IMAGE=$LOCAL_BASE
  if ! podman image exists "$LOCAL_BASE"; then
    tarball="$IMAGE_CACHE/bookworm-minbase-python3.tar"
    if [[ ! -s "$tarball" ]]; then
      step "debootstrap bookworm (minbase + python3)"
      mkdir -p "$IMAGE_CACHE"
      root=$(mktemp -d "$IMAGE_CACHE/rootfs.XXXXXX")
      trap 'rm -rf "$root"' EXIT
      # Debian bookworm's python3 is 3.11, as the public python:3.11-slim base. python3-venv brings
      # ensurepip, which the Dockerfile uses to make /opt/venv.
      debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$root" http://deb.debian.org/debian >"$IMAGE_CACHE/debootstrap.log" 2>&1 \
        || { tail -20 "$IMAGE_CACHE/debootstrap.log"; exit 1; }
      rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
      tar -C "$root" --numeric-owner -cf "$tarball.part" .
      mv "$tarball.part" "$tarball"
      rm -rf "$root"
      trap - EXIT
    fi
    step "podman import $tarball"
    podman import --change 'CMD ["/bin/bash"]' "$tarball" "$LOCAL_BASE" >/dev/null
  fi
fi

step "podman build $IMAGE from $BASE_IMAGE"
# --format docker: podman keeps HEALTHCHECK only in Docker-format images (OCI has no such field).
# --network host: pip in the build reaches the package index directly (no registry proxy needed).
# pip in the build trusts the CA bundle pip trusts here (a TLS-intercepting proxy's CA is in it on
# these machines): passed as a build secret, mounted only while pip runs, never in a layer.
pip_cert=${PIP_CERT:-$(python3 -m pip config get global.cert 2>/dev/null || true)}
[[ -s "$pip_cert" ]] || pip_cert=/etc/ssl/certs/ca-certificates.crt
secret=()
[[ -s "$pip_cert" ]] && secret=(--secret "id=pip_cert,src=$pip_cert")
podman build --runtime "$RUNTIME" --format docker --network host "${secret[@]}" \
  --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$IMAGE" .
step "built $IMAGE"
