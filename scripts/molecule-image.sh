#!/usr/bin/env bash
# Builds the container image of the Molecule scenarios, localhost/pgdr-node:<recipe hash>,
# from Debian's own packages (no container registry is needed, or used):
#   debootstrap --variant=minbase bookworm + the packages below -> tarball -> podman import
#
#   scripts/molecule-image.sh          # prints the image name; builds only when missing
#   scripts/molecule-image.sh --force  # rebuilds the tarball and the image
#
# The tag is a hash of the recipe (the lines between the "recipe" markers below: suite,
# mirror, packages, how the root file system is trimmed and imported), so an unchanged
# recipe reuses .cache/molecule/pgdr-node-<hash>.tar.gz (1-2 min to build) and the image.
# Run as root; scripts/molecule.sh runs it with the scenarios' podman configuration.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$REPO/.cache/molecule"
# podman state of the scenarios (written by scripts/molecule.sh), unless the caller chose
[ -z "${CONTAINERS_CONF:-}" ] && [ -f "$REPO/.cache/podman/containers.conf" ] \
    && export CONTAINERS_CONF="$REPO/.cache/podman/containers.conf"
[ -z "${CONTAINERS_STORAGE_CONF:-}" ] && [ -f "$REPO/.cache/podman/storage.conf" ] \
    && export CONTAINERS_STORAGE_CONF="$REPO/.cache/podman/storage.conf"

# --- recipe (hashed into the image tag) ---
SUITE=bookworm
MIRROR="${PGDR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
# systemd-sysv + dbus: /sbin/init, so that PostgreSQL and cron run as units as on a real
# node; python3-apt: ansible's apt/package modules; python3-venv: the agent's virtualenv;
# python3-packaging: ansible's pip module needs it on the node (the agent role's virtualenv);
# util-linux and bsdutils (essential) bring flock and logger, and logrotate reads the file of
# the schedule role's log.
PACKAGES=(python3 python3-apt python3-venv python3-packaging systemd-sysv dbus cron
          logrotate postgresql-15 postgresql-client-15 iproute2 iputils-ping procps sudo
          ca-certificates)

# --- end of recipe ---

say() { echo "molecule-image: $*" >&2; }
die() { echo "molecule-image: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap, podman)"

force=no
[ "${1:-}" = --force ] && force=yes

recipe="$MIRROR
$(sed -n '/^ *# --- recipe/,/^ *# --- end of recipe/p; /^ *# --- trim/,/^ *# --- end of trim/p' "${BASH_SOURCE[0]}")"
hash="$(printf '%s' "$recipe" | sha256sum | cut -c1-12)"
image="localhost/pgdr-node:$hash"
tarball="$CACHE/pgdr-node-$hash.tar.gz"

if [ "$force" = no ] && podman image exists "$image"; then
    say "$image present"
    echo "$image"
    exit 0
fi

mkdir -p "$CACHE"
if [ "$force" = yes ] || [ ! -s "$tarball" ]; then
    command -v debootstrap >/dev/null || die "debootstrap missing (apt-get install debootstrap)"
    rootfs="$(mktemp -d "$CACHE/rootfs.XXXXXX")"
    trap 'rm -rf "$rootfs" "$tarball.partial"' EXIT
    say "debootstrap $SUITE ($(IFS=,; echo "${PACKAGES[*]}")) -> $tarball"
    start=$(date +%s)
    if ! debootstrap --variant=minbase --include="$(IFS=,; echo "${PACKAGES[*]}")" \
            "$SUITE" "$rootfs" "$MIRROR" > "$CACHE/debootstrap.log" 2>&1; then
        tail -20 "$CACHE/debootstrap.log" >&2
        die "debootstrap failed (log: $CACHE/debootstrap.log)"
    fi
    # --- trim (hashed into the image tag) ---
    # A container, not a machine: no apt caches, the host's name resolution (podman writes
    # /etc/hosts and /etc/resolv.conf), no getty, and PostgreSQL's default cluster starts
    # with the container (postgresql@15-main, the package created it).
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    : > "$rootfs/etc/machine-id"
    echo pgdr-node > "$rootfs/etc/hostname"
    ln -sf /dev/null "$rootfs/etc/systemd/system/getty@tty1.service"
    ln -sf /dev/null "$rootfs/etc/systemd/system/console-getty.service"
    ln -sf /dev/null "$rootfs/etc/systemd/system/systemd-logind.service"
    # no list of Debian's packages in the image: apt inside the containers would need
    # `apt-get update` first, and the scenarios install nothing from the network
    # --- end of trim ---
    tar -C "$rootfs" --numeric-owner -czf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
    trap - EXIT
    say "rootfs built in $(( $(date +%s) - start )) s ($(du -h "$tarball" | cut -f1))"
    # keep only this recipe's tarball
    find "$CACHE" -maxdepth 1 -name 'pgdr-node-*.tar.gz' ! -name "pgdr-node-$hash.tar.gz" -delete
else
    say "reusing $tarball"
fi

# --- trim: import ---
podman import --change 'CMD ["/sbin/init"]' --change 'ENV container=podman' \
    --change 'STOPSIGNAL SIGRTMIN+3' "$tarball" "$image" >/dev/null
say "imported $image"
# images of older recipes go (their containers, if any, keep them until removed)
podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/pgdr-node:' \
    | grep -vx "$image" | xargs -r podman rmi >/dev/null 2>&1 || true
echo "$image"
