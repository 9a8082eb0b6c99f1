#!/usr/bin/env bash
# ansible-test sanity (and ansible-lint when installed) on a clean copy of the collection.
#
#   tests/sanity.sh                  # every sanity test, ansible-test's pinned tools in
#                                    # cached virtual environments (--venv; PyPI only)
#   SANITY_MODE=local tests/sanity.sh  # use the tools installed in .venv (--local)
#   tests/sanity.sh --test pep8      # extra arguments go to ansible-test sanity
#
# ansible-test wants the collection at .../ansible_collections/pgdr/postgresql and tests
# every file it finds there, so the copy leaves out what is not part of the collection
# (virtual environments, caches, the lab and the benchmark, as galaxy.yml's build_ignore).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
venv=${PGDR_VENV:-$here/.venv}
python_version=${SANITY_PYTHON:-3.11}
mode=${SANITY_MODE:-venv}
export PATH="$venv/bin:$PATH"

work=$(mktemp -d "${TMPDIR:-/tmp}/pgdr-sanity.XXXXXX")
trap 'rm -rf "$work"' EXIT
dest="$work/ansible_collections/pgdr/postgresql"
mkdir -p "$dest"

# What a commit would hold (tracked, and untracked but not ignored files), minus what
# galaxy.yml's build_ignore leaves out of the collection artifact.
skip='^(bin|bench|lab|\.ci|\.lab|\.cache|\.venv)/'
if git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$here" && git ls-files -z --cached --others --exclude-standard) \
        | grep -zEv "$skip" \
        | tar -C "$here" --null -T - --ignore-failed-read -cf - 2>/dev/null \
        | tar -C "$dest" -xf -
else
    tar -C "$here" --exclude=./.venv --exclude=./.cache --exclude=./.lab --exclude=./.git \
        --exclude=./bin --exclude=./bench --exclude=./lab --exclude=./.ci --exclude=./tests/output \
        --exclude=__pycache__ -cf - . | tar -C "$dest" -xf -
fi
# ansible-test finds files through git when it can; give the copy its own repository
# so that it tests exactly the copied files.
git -C "$dest" init -q && git -C "$dest" add -A >/dev/null

# ansible-test builds its sanity virtual environments with a pip bootstrap script from
# ci-files.testing.ansible.com. Where only a package index is reachable, stand in for it
# with pip's own wheel from the index (what that script embeds).
pip_version=$(python - <<'PY'
from ansible_test._internal.python_requirements import get_venv_packages
from ansible_test._internal.host_configs import NativePythonConfig
print(get_venv_packages(NativePythonConfig(version="3.11"))["pip"])
PY
)
cache="$HOME/.ansible/test/cache"
get_pip="$cache/get_pip_${pip_version//./_}.py"
mkdir -p "$cache"
if [ ! -s "$get_pip" ] && ! curl -fsSL --max-time 10 -o "$get_pip.download" \
        "https://ci-files.testing.ansible.com/ansible-test/get-pip-$pip_version.py" 2>/dev/null; then
    python -m pip download -q --no-deps -d "$cache" "pip==$pip_version"
    cat > "$get_pip.download" <<PY
# Stand-in for get-pip-$pip_version.py, written by pgdr's tests/sanity.sh: runs pip from
# its wheel (downloaded from the package index) to install pip into a new venv.
import glob, os, sys
wheel = glob.glob(os.path.join("$cache", "pip-$pip_version-*.whl"))[0]
sys.path.insert(0, wheel)
from pip._internal.cli.main import main
args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
sys.exit(main(["install", "--upgrade", "--force-reinstall"] + args))
PY
fi
[ -s "$get_pip" ] || mv "$get_pip.download" "$get_pip"

cd "$dest"
status=0
start=$(date +%s)
if [ "$mode" = local ]; then
    ansible-test sanity --local --python "$python_version" --color no "$@" || status=$?
else
    ansible-test sanity --venv --requirements --python "$python_version" --color no "$@" \
        || status=$?
fi
echo "ansible-test sanity: exit $status in $(( $(date +%s) - start )) s"

if command -v ansible-lint >/dev/null 2>&1; then
    # the copy is the collection: playbooks resolve pgdr.postgresql.* from it
    ANSIBLE_COLLECTIONS_PATH="$work" ansible-lint --offline || status=$?
else
    echo "ansible-lint: not installed, skipped (pip install ansible-lint)"
fi
exit "$status"
