# shellcheck shell=bash
# Helpers sourced by scripts/bootstrap.sh and scripts/molecule.sh (each defines say()).

# true when the Debian package is not installed
pkg_missing() { [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" != "install ok installed" ]; }

# apt_install PKG...: install the given packages (the callers pass only missing ones)
apt_install() {
    [ $# -gt 0 ] || return 0
    say "installing apt packages: $*"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# pip, minus the noise of a pip.conf listing local indexes that may not exist
pip_quiet() {
    "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    return "${PIPESTATUS[0]}"
}
