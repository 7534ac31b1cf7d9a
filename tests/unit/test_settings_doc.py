"""docs/configuration.md documents every setting: its table is what the generator renders
from Settings, and every RINGFENCE_* variable the code reads is in it."""

from __future__ import annotations

import re
from dataclasses import field, fields, make_dataclass

import pytest

from gateway import config_doc
from gateway.config import PROJECT_ROOT, Settings, doc

# Where variables are read at run time (and by the tooling around it): the packages, the
# deployment files, the benchmarks, the Makefile, CI and the test suite's own switches.
SOURCES = ("gateway", "mailer", "admin_api", "console", "deploy", "bench", ".ci")
SOURCE_FILES = ("Makefile", "tests/conftest.py", "tests/browser/conftest.py")
VARIABLE = re.compile(r"\bRINGFENCE_[A-Z][A-Z0-9_]*")


def test_the_documented_table_is_the_generated_one() -> None:
    document = config_doc.DOCUMENT.read_text(encoding="utf-8")
    assert config_doc.generated_part(document), "docs/configuration.md lost its markers"
    assert config_doc.generated_part(document) == config_doc.render(), (
        "docs/configuration.md differs from Settings: run python -m gateway.config_doc --write"
    )
    assert config_doc.main(["--check"]) == 0


def test_every_setting_has_a_row_with_its_description() -> None:
    rows = {name: text for name, _, _, text in config_doc.settings_rows()}
    assert list(rows) == [f"RINGFENCE_{f.name.upper()}" for f in fields(Settings)]
    assert all(len(text) > 8 for text in rows.values())
    table = config_doc.render()
    for f in fields(Settings):
        assert f"| `RINGFENCE_{f.name.upper()}` |" in table


def test_a_setting_without_a_description_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    extended = make_dataclass(
        "Settings",
        [
            ("documented", int, field(default=1, metadata=doc("a documented one"))),
            ("new_knob", int, field(default=3)),
        ],
        bases=(Settings,),
        frozen=True,
    )
    monkeypatch.setattr(config_doc, "Settings", extended)
    with pytest.raises(ValueError, match="new_knob") as refused:
        config_doc.render()
    assert "documented" not in str(refused.value).split(":")[-1]


def test_defaults_render_without_this_machines_paths() -> None:
    rows = {name: default for name, _, default, _ in config_doc.settings_rows()}
    assert rows["RINGFENCE_INSTANCE_DIR"] == "`./instance`"
    assert rows["RINGFENCE_PORT"] == "`8000`"
    assert rows["RINGFENCE_REVISION_POLL_SECONDS"] == "`2`"
    assert rows["RINGFENCE_DECISIONS_ALLOW_LOOPBACK"] == "`false`"
    assert rows["RINGFENCE_DATABASE_URL"] == "empty"
    assert str(PROJECT_ROOT) not in config_doc.render()


def _variables_read() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    paths = [p for d in SOURCES for p in (PROJECT_ROOT / d).rglob("*") if p.is_file()]
    paths += [PROJECT_ROOT / name for name in SOURCE_FILES]
    for path in paths:
        if path.suffix not in {"", ".py", ".sh", ".yaml", ".yml", ".conf", ".toml"}:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for name in VARIABLE.findall(text):
            found.setdefault(name, set()).add(str(path.relative_to(PROJECT_ROOT)))
    return found


def test_every_variable_the_code_reads_is_documented() -> None:
    read = _variables_read()
    assert "RINGFENCE_DATABASE_URL" in read and "RINGFENCE_THREADS" in read  # the scan works
    settings = {f"RINGFENCE_{f.name.upper()}" for f in fields(Settings)}
    others = {name for name, *_ in config_doc.OTHER_VARIABLES}
    missing = {name: sorted(where) for name, where in read.items() if name not in settings | others}
    assert not missing, (
        "RINGFENCE_* variables read outside Settings and not in "
        f"config_doc.OTHER_VARIABLES: {missing}"
    )
    document = config_doc.DOCUMENT.read_text(encoding="utf-8")
    assert all(f"`{name}`" in document for name in read)
