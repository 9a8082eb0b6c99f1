"""The roles' names and their variables' names: pgdr_<role>/ and pgdr_<role>_* (ansible-lint's
production profile takes the prefix from the directory), with the names from before 0.2.0
still read: the old role directories import the new ones, every default falls back to the
old variable name, and the filter old_names finds the old names that are set."""
import pathlib
import re

import pytest
import yaml

from ansible_collections.pgdr.postgresql.plugins.filter.old_names import RENAMED, old_names

ROOT = pathlib.Path(__file__).resolve().parents[2]
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if p.name.startswith("pgdr_"))


def _load(role, name):
    return yaml.safe_load((ROOT / "roles" / role / name).read_text())


def test_every_role_has_the_prefix_and_an_old_name_that_imports_it():
    assert ROLES == ["pgdr_agent", "pgdr_archiving", "pgdr_repository", "pgdr_restore",
                     "pgdr_schedule"]
    for role in ROLES:
        old = role[len("pgdr_"):]
        tasks = _load(old, "tasks/main.yml")
        assert tasks[-1]["ansible.builtin.import_role"] == {"name": "pgdr.postgresql." + role}
        assert not (ROOT / "roles" / old / "defaults").exists(), old  # one set of defaults


@pytest.mark.parametrize("role", ROLES)
def test_every_variable_is_documented_prefixed_and_reads_its_old_name(role):
    defaults = _load(role, "defaults/main.yml")
    options = _load(role, "meta/argument_specs.yml")["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(options)
    for name, value in defaults.items():
        assert name.startswith(role + "_"), name
        old = RENAMED.get(name, name[len("pgdr_"):])
        assert re.match(r"^\{\{ %s \| default\(.*\) \}\}$" % re.escape(old), str(value)), \
            "%s does not fall back to %s: %r" % (name, old, value)


def test_old_names_finds_the_old_names_that_are_set():
    restore = ROOT / "roles" / "pgdr_restore"
    found = old_names(["restore_port", "restore_node", "restore_action", "pgdr_restore_port",
                       "restore_portt", "point"], restore)
    # restore_action is the playbook's own extra variable, not an old role variable
    assert found == ["restore_node -> pgdr_restore_host", "restore_port -> pgdr_restore_port"]
    assert old_names([], restore) == []
    # the playbooks' preflight asks every role at once
    both = old_names(["agent_launcher", "restore_node", "schedule_full"],
                     [ROOT / "roles" / "pgdr_agent", restore])
    assert both == ["agent_launcher -> pgdr_agent_launcher", "restore_node -> pgdr_restore_host"]


def test_no_role_task_file_still_uses_an_old_name():
    """Only the defaults (their fallbacks) and the warnings name the old variables."""
    olds = set()
    for role in ROLES:
        for name in _load(role, "defaults/main.yml"):
            olds.add(RENAMED.get(name, name[len("pgdr_"):]))
    pattern = re.compile(r"(?<![A-Za-z0-9_])(%s)(?![A-Za-z0-9_])" % "|".join(sorted(olds)))
    for path in sorted((ROOT / "roles").rglob("*")):
        if path.suffix not in (".yml", ".j2") or path.parts[-2:] == ("defaults", "main.yml"):
            continue
        used = pattern.findall(path.read_text())
        assert not used, "%s uses %s" % (path.relative_to(ROOT), sorted(set(used)))
    # the playbooks read an old name only as the fallback of its new one, as the role does
    fallback = re.compile(r"(?<![A-Za-z0-9_])(?<!default\()(%s)(?![A-Za-z0-9_])" % "|".join(sorted(olds)))
    for path in sorted((ROOT / "playbooks").rglob("*.yml")):
        if path.name == "preflight.yml":  # accepts them (not a misspelling)
            continue
        used = fallback.findall(path.read_text())
        assert not used, "%s uses %s" % (path.relative_to(ROOT), sorted(set(used)))
