"""The parameter-parity table: the committed doc is the generated one, every provider's declarations
name real IR parameters (row by row), and cells say what each declaration means."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from adapters import parity, registry

DOC = Path(__file__).resolve().parents[2] / "docs" / "parameters.md"


def all_classes() -> dict:
    providers, _ = parity.load_providers()
    return {**providers, **parity.preset_classes(providers)}


def test_committed_doc_is_generated_one():
    assert DOC.read_text(encoding="utf-8") == parity.render(), (
        "docs/parameters.md is stale: run `python -m adapters.parity > docs/parameters.md`")


def test_every_registered_provider_is_in_the_table():
    _, missing = parity.load_providers()
    assert missing == [], f"adapter modules missing for providers: {missing}"


@pytest.mark.parametrize("provider", list(registry.PROVIDERS))
def test_provider_declarations_name_real_ir_params(provider):
    cls = registry.provider_class(provider)
    assert parity.problems(cls) == []
    assert set(cls.supported_params) <= parity.KNOWN_PARAMS
    assert set(dict(cls.renamed_params)) <= parity.KNOWN_PARAMS


def test_preset_declarations_name_real_ir_params():
    presets = parity.preset_classes(registry.PROVIDERS)
    assert presets, "the OpenAI presets are part of the table"
    for name, cls in presets.items():
        assert parity.problems(cls) == [], name


class Fake:
    supported_params = frozenset({"temperature", "stop"})
    renamed_params = {"stop": "stop_sequences", "max_tokens": "max_new_tokens"}


@pytest.mark.parametrize(
    "param, expected",
    [("temperature", "✓"), ("stop", "→ `stop_sequences`"), ("max_tokens", "→ `max_new_tokens`"),
     ("seed", "—"), ("tools", "—"), ("n", "—")],
)
def test_cell_rows(param, expected):
    assert parity.cell(Fake, param) == expected


def test_max_tokens_is_always_supported():
    class Bare:
        supported_params = frozenset()
        renamed_params = {}

    assert parity.cell(Bare, "max_tokens") == "✓"


@pytest.mark.parametrize(
    "supported, renamed, problem",
    [({"temprature"}, {}, "supported_params names unknown parameter 'temprature'"),
     (set(), {"num_predict": "x"}, "renamed_params names unknown parameter 'num_predict'"),
     (set(), {"seed": "random_seed"}, "renamed_params renames 'seed', which supported_params does not list")],
)
def test_problems_are_reported(supported, renamed, problem):
    cls = type("Bad", (), {"supported_params": frozenset(supported), "renamed_params": renamed})
    assert parity.problems(cls) == [problem]


def table_rows(markdown: str, heading: str) -> dict[str, dict[str, str]]:
    """The table under `heading`, decoded: IR parameter -> {column name -> cell}."""
    lines = markdown.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    table = lines[start:end]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    header = [h.strip("`") for h in rows[0]]
    return {row[0].strip("`"): dict(zip(header[2:], row[2:])) for row in rows[2:]}


def test_rendered_table_matches_each_class_row_by_row():
    classes = all_classes()
    doc = parity.render()
    providers = table_rows(doc, "## Providers")
    presets = table_rows(doc, "## OpenAI-compatible presets")
    assert list(providers) == list(parity.PARAMS) and list(presets) == list(parity.PARAMS)
    for param in parity.PARAMS:
        cells = providers[param] | presets[param]
        assert cells == {name: parity.cell(cls, param) for name, cls in classes.items()}


def test_replicate_column():
    rows = table_rows(parity.render(), "## Providers")
    column = {param: cells["replicate"] for param, cells in rows.items()}
    assert column["max_tokens"] == "→ `max_new_tokens`" and column["stop"] == "→ `stop_sequences`"
    assert column["temperature"] == "✓" and column["tools"] == "—" and column["n"] == "—"


def test_missing_module_is_skipped_but_broken_import_surfaces(monkeypatch, tmp_path):
    monkeypatch.setitem(registry.PROVIDERS, "future", "adapters.not_written_yet:FutureBackend")
    _, missing = parity.load_providers()
    assert missing == ["future"]
    assert "Not yet implemented: `future`." in parity.render()

    (tmp_path / "parity_broken_mod.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.PROVIDERS, "future", "parity_broken_mod:Backend")
    with pytest.raises(ModuleNotFoundError):
        parity.load_providers()
    sys.modules.pop("parity_broken_mod", None)


def test_main_prints_the_document(capsys):
    parity.main()
    assert capsys.readouterr().out == parity.render()
