"""Documentation cannot drift from the engine: every documented option of every
module (its own and its doc fragments') matches the engine's OPTIONS and the
argument spec the adapter builds."""
import importlib
import re

import pytest
import yaml

from ansible_collections.pgdr.postgresql.plugins.module_utils import _adapter
from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import options

MODULES = ["pg_backup", "pg_restore_chain", "pg_backup_info", "pg_backup_expire", "pg_check",
           "pg_drill", "pg_instance", "pg_restore_stage", "s3_backup_upload", "s3_repository"]
PREFIX = "ansible_collections.pgdr.postgresql.plugins."
KIND_TO_TYPE = {"str": "str", "int": "int", "bool": "bool", "path": "path", "dict": "dict",
                "list": "list"}


def fragment(name):
    """Options of pgdr.postgresql.<module>[.<VARIABLE>] (ours only)."""
    module_name, variable = (name.split(".", 1) + [""])[:2]
    cls = importlib.import_module(PREFIX + "doc_fragments." + module_name).ModuleDocFragment
    return yaml.safe_load(getattr(cls, variable.upper() or "DOCUMENTATION"))


def merged_options(doc):
    merged = dict(doc.get("options") or {})
    for name in doc.get("extends_documentation_fragment", []):
        if name.startswith("pgdr.postgresql."):
            for key, value in (fragment(name[len("pgdr.postgresql."):]).get("options") or {}).items():
                assert key not in merged, "%s documented twice" % key
                merged[key] = value
    return merged


def text(description):
    items = description if isinstance(description, list) else [description]
    return [re.sub(r"\s+", " ", item).strip() for item in items]


def group_names(group, exclude=()):
    return set(o.name for o in options.OPTIONS if group in o.groups and o.name not in exclude)


def test_fragments_cover_exactly_their_options():
    assert set(fragment("repository")["options"]) == \
        group_names("repo", exclude=("cluster",)) | set(_adapter.COMMON_EXTRAS)
    assert set(fragment("repository.cluster")["options"]) == {"cluster"}
    assert set(fragment("postgres")["options"]) == group_names("pg")


@pytest.mark.parametrize("name", ["repository", "repository.cluster", "postgres"])
def test_fragments_match_options(name):
    for key, doc in fragment(name)["options"].items():
        if key in _adapter.COMMON_EXTRAS:
            assert doc["type"] == _adapter.COMMON_EXTRAS[key]["type"]
            continue
        check_option(key, doc)


def check_option(key, doc):
    option = options.BY_NAME[key]
    assert doc["type"] == KIND_TO_TYPE[option.kind], key
    assert doc.get("default") == option.default, key
    assert doc.get("choices") == (list(option.choices) if option.choices else None), key
    assert text(doc["description"])[0] == option.help, key
    assert "no_log" not in doc  # not a documentation key


@pytest.mark.parametrize("module_name", MODULES)
def test_module_docs_match_argspec_and_options(module_name):
    module = importlib.import_module(PREFIX + "modules." + module_name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    assert doc["module"] == module_name
    assert str(doc["version_added"]) == "0.1.0"
    assert doc["author"] and doc["short_description"]
    assert doc["attributes"]["check_mode"]["support"] == "full"
    args = dict((k, v) for k, v in module.ARGS.items() if k != "needs")
    spec = _adapter.argument_spec(**args)
    documented = merged_options(doc)
    assert set(documented) == set(spec)
    for key, entry in spec.items():
        docs = documented[key]
        assert docs["type"] == entry["type"], key
        assert docs.get("default") == entry.get("default"), key
        assert docs.get("choices") == entry.get("choices"), key
        assert bool(docs.get("required")) == bool(entry.get("required")), key
        own = key in _adapter.COMMON_EXTRAS or key in (args.get("extras") or {})
        if key in options.BY_NAME and not own:  # an engine option: its help, word for word
            assert text(docs["description"])[0] == options.BY_NAME[key].help, key
    examples = yaml.safe_load(module.EXAMPLES)
    assert examples and all(any(k.startswith("pgdr.postgresql.") for k in task)
                            for task in examples if "ansible.builtin.debug" not in task
                            and "ansible.builtin.assert" not in task)
    returned = yaml.safe_load(module.RETURN)
    assert {"events", "error_code", "stage"} <= set(returned)


# -- the tree and the docs: what exists is documented --------------------------------------
ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]
ENGINE = ROOT / "plugins" / "module_utils" / "_pgdr"


def _doc(name):
    return (ROOT / name).read_text()


def _names(folder, suffix=""):
    return sorted(p.name[:-len(suffix)] if suffix else p.name
                  for p in (ROOT / folder).iterdir()
                  if p.name.endswith(suffix) and not p.name.startswith(("_", ".")))


def test_every_module_is_in_the_docs_and_in_this_test():
    modules = _names("plugins/modules", ".py")
    assert sorted(MODULES) == modules
    for module in modules:
        assert "| `%s` |" % module in _doc("docs/modules.md"), module
        assert "`pgdr.postgresql.%s`" % module in _doc("README.md"), module
        assert module in _doc("docs/architecture.md"), module


def test_every_role_and_playbook_is_in_the_docs():
    architecture, readme = _doc("docs/architecture.md"), _doc("README.md")
    for role in _names("roles"):
        assert "  %s/" % role in architecture, "role %s missing from the tree" % role
        assert "pgdr.postgresql.%s" % role in readme, "role %s missing from the README" % role
    for playbook in _names("playbooks", ".yml"):
        assert "  %s.yml" % playbook in architecture, "playbook %s missing" % playbook
        assert "pgdr.postgresql.%s" % playbook in readme, "playbook %s missing" % playbook


def test_every_cli_verb_is_in_the_cli_docs():
    from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import cli
    documented = _doc("docs/cli.md")
    for verb in cli.COMMANDS:
        assert "pgdr %s" % verb in documented, "pgdr %s missing from docs/cli.md" % verb


def test_every_engine_file_is_in_the_architecture():
    """The tree in docs/architecture.md names every file of the engine (a name in a list
    of its folder counts), so a new file cannot arrive unexplained."""
    tree = _doc("docs/architecture.md")
    tree = tree[tree.index("## The tree"):tree.index("## How the pieces fit")]
    for path in sorted(ENGINE.rglob("*.py")):
        if path.name == "__init__.py":
            continue
        assert re.search(r"\b%s\b" % re.escape(path.stem), tree), \
            "%s is not named in docs/architecture.md's tree" % path.relative_to(ROOT)


# -- the engine's layers: docs/architecture.md's table is the code's import graph ----------
def _engine_name(path):
    """commands/backup.py -> commands/backup; storage/__init__.py -> storage (the package,
    what `from ..storage import open_storage` imports); the engine's own -> __init__."""
    name = path.relative_to(ENGINE).with_suffix("").as_posix()
    if path.name == "__init__.py":
        name = name[:-len("/__init__")] if "/" in name else "__init__"
    return name


def _engine_files():
    return dict((_engine_name(p), p) for p in sorted(ENGINE.rglob("*.py")))


def _engine_imports(name, path, files):
    """The engine files one file imports, lazy imports inside functions included."""
    import ast
    package = name.split("/") if path.name == "__init__.py" and name != "__init__" else (
        [] if name == "__init__" else name.split("/")[:-1])
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = package[:len(package) - (node.level - 1)]
        module = base + (node.module.split(".") if node.module else [])
        candidates = ["/".join(module + [alias.name]) for alias in node.names]
        if not any(c in files for c in candidates):
            candidates.append("/".join(module) or "__init__")  # names from a package
        found.update(c for c in candidates if c in files and c != name)
    return sorted(found)


def engine_layers():
    """{file: (floor, imports)}: floor 0 imports no engine file; any other file sits one
    floor above the highest file it imports. A cycle fails."""
    files = _engine_files()
    imports = dict((name, _engine_imports(name, path, files)) for name, path in files.items())
    floors = {}

    def floor(name, path=()):
        assert name not in path, "import cycle: %s" % " -> ".join(path + (name,))
        if name not in floors:
            floors[name] = 1 + max([floor(i, path + (name,)) for i in imports[name]] or [-1])
        return floors[name]

    return dict((name, (floor(name), imports[name])) for name in files)


def test_the_architecture_draws_the_engine_layers_as_the_code_imports_them():
    text = _doc("docs/architecture.md")
    table = text[text.index("## Layers"):]
    rows = re.findall(r"^\| (\d+) \| `([a-z0-9_/]+)` \| ([a-z0-9_/, `]*) \|$", table, re.M)
    drawn = dict((name, (int(floor), sorted(re.findall(r"`([a-z0-9_/]+)`", imports))))
                 for floor, name, imports in rows)
    assert drawn == engine_layers()
