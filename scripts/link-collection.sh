#!/bin/sh
# Make this checkout resolvable as the collection pgdr.postgresql:
#   .cache/collections/ansible_collections/pgdr/postgresql -> ../../../.. (the repo root)
# ansible.cfg points collections_path at .cache/collections. Idempotent.
set -eu
repo=$(cd "$(dirname "$0")/.." && pwd)
ns="$repo/.cache/collections/ansible_collections/pgdr"
mkdir -p "$ns"
link="$ns/postgresql"
if [ "$(readlink "$link" 2>/dev/null || true)" != "../../../.." ]; then
    rm -rf "$link"
    ln -s ../../../.. "$link"
fi
[ -f "$link/ansible.cfg" ] || { echo "link-collection: $link does not lead to the repo" >&2; exit 1; }
