"""One registry of error codes: the engine raises only declared codes, every declared code
is raised somewhere, and docs/cli.md's table lists exactly the declared ones."""
import re
from pathlib import Path

from ansible_collections.pgdr.postgresql.plugins.module_utils._pgdr import errors

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "plugins" / "module_utils" / "_pgdr"


def _raised():
    found = {}
    for path in sorted(ENGINE.rglob("*.py")):
        text = path.read_text()
        for code in re.findall(r'(?:code=|default_code = )"([a-z_]+)"', text):
            found.setdefault(code, path.relative_to(ROOT))
    return found


def test_the_engine_raises_only_declared_codes():
    undeclared = {c: str(p) for c, p in _raised().items() if c not in errors.CODES}
    assert not undeclared, "declare these in errors.CODES: %s" % undeclared


def test_every_declared_code_is_raised_somewhere():
    assert sorted(set(errors.CODES) - set(_raised())) == []


def test_the_docs_list_exactly_the_declared_codes_with_their_meaning():
    text = (ROOT / "docs" / "cli.md").read_text()
    table = text[text.index("## Error codes"):text.index("## Exit codes")]
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| (.*) \|$", table, re.M))
    assert rows == errors.CODES


def test_every_class_default_is_declared():
    for row in errors.EXIT_CODES[1:]:
        assert row[1] in errors.CODES
