#!/usr/bin/env bash
# Builds skylift's container image with podman, from Debian packages and wheels only: no image
# registry is needed, so it also runs on an air-gapped machine with a Debian mirror and a wheel
# folder. Three steps, each cached:
#   1. the base: Debian bookworm (minbase + python3, venv, ca-certificates) made by mmdebstrap and
#      imported as localhost/skylift-base:<hash of its recipe> (skipped when that image exists);
#   2. the wheels: skylift and every dependency, pinned by constraints.txt (CPU torch), into
#      build/image/wheels (pip's own cache makes a rebuild fast);
#   3. the image: deploy/Containerfile over that base, installing the wheels offline.
# Usage: bash scripts/build_image.sh [TAG]   (default TAG: localhost/skylift:latest)
# Environment: MIRROR (Debian mirror, default http://deb.debian.org/debian), PODMAN (default
# podman), PYTHON (default python3); podman reads CONTAINERS_CONF as usual.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="${1:-localhost/skylift:latest}"
mirror="${MIRROR:-http://deb.debian.org/debian}"
podman_cmd="${PODMAN:-podman}"
python="${PYTHON:-python3}"
packages="python3,python3-venv,ca-certificates"
recipe="bookworm minbase $packages"
base="localhost/skylift-base:$(printf '%s' "$recipe" | sha256sum | cut -c1-16)"
work="build/image"
mkdir -p "$work"

if ! $podman_cmd image exists "$base"; then
    echo "build_image: making the base $base with mmdebstrap ($recipe; about 2 minutes)"
    mmdebstrap --quiet --variant=minbase --include="$packages" bookworm "$work/base.tar" "$mirror"
    $podman_cmd import --quiet "$work/base.tar" "$base" >/dev/null
    rm -f "$work/base.tar"
fi

echo "build_image: collecting wheels (constraints.txt keeps torch on its CPU build)"
rm -rf "$work/context" && mkdir -p "$work/context/wheels"
"$python" -m pip wheel --quiet --no-deps -w "$work/context/wheels" .
"$python" -m pip download --quiet -c constraints.txt -d "$work/context/wheels" "$work"/context/wheels/skylift-*.whl
# The image's Python (Debian's) may be another patch release than this one, and markers such as
# python_full_version < "3.11.3" then ask for more: let its own pip say what is missing, fetch it.
for _ in 1 2 3 4 5 6 7 8; do
    missing="$($podman_cmd run --rm -v "$PWD/$work/context/wheels:/wheels:ro" "$base" sh -c \
        'python3 -m venv /tmp/v && /tmp/v/bin/pip install --dry-run --no-index --find-links /wheels skylift 2>&1 || true' |
        sed -n 's/.*No matching distribution found for \([^ ;]*\).*/\1/p')"
    [ -z "$missing" ] && break
    echo "build_image: the image's Python also needs $missing"
    "$python" -m pip download --quiet --no-deps -c constraints.txt -d "$work/context/wheels" "$missing"
done
cp deploy/healthcheck.py "$work/context/"

echo "build_image: building $tag"
$podman_cmd build --quiet --format docker --build-arg "BASE=$base" -f deploy/Containerfile -t "$tag" \
    "$work/context" >/dev/null
echo "build_image: built $tag ($($podman_cmd image inspect --format '{{.Size}}' "$tag" | numfmt --to=iec))"
