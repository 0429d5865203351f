"""The conformance probes against the emulators: the correct emulators pass every probe (or are
"not supported"), and each deliberate defect (loadtest/emulators/defects.py) is reported by exactly
the probe that owns its rule."""

from __future__ import annotations

import pytest

from loadtest.emulators.defects import DEFECTS
from proxy.conformance.http import Target
from proxy.conformance.probe import FAIL, PASS, UNSUPPORTED, probes
from proxy.conformance.runner import run

# format -> (emulator, URL suffix, model, api key)
SERVERS = {
    "openai": ("openai", "/v1", "emulated-gpt", None),
    "anthropic": ("anthropic", "", "claude-sonnet-4-5", "sk-ant-test"),
}


async def _report(start_emulator, fmt: str, headers: tuple = ()):
    emulator, suffix, model, key = SERVERS[fmt]
    url = await start_emulator(emulator)
    return await run(Target(url + suffix, fmt, model, key, headers), timeout=10, deadline=60)


@pytest.mark.parametrize("fmt", list(SERVERS))
async def test_correct_emulator_passes_every_probe(start_emulator, fmt):
    report = await _report(start_emulator, fmt)
    bad = [(r.id, r.status, r.evidence) for r in report.results if r.status not in (PASS, UNSUPPORTED)]
    assert not bad
    assert [r.id for r in report.results] == [p.id for p in probes(fmt)]
    assert report.ok
    # The emulators implement every optional feature, so nothing may be "not supported" either.
    assert {r.id for r in report.results if r.status == UNSUPPORTED} == set()


def test_every_defect_names_a_probe_of_its_format():
    for name, d in DEFECTS.items():
        assert d.probe in {p.id for p in probes(d.format)}, name


@pytest.mark.parametrize("name", list(DEFECTS))
async def test_defect_is_reported_by_its_probe_only(start_emulator, name):
    d = DEFECTS[name]
    report = await _report(start_emulator, d.format, (("x-emulate", f"defect={name}"),))
    failed = {r.id for r in report.results if r.status != PASS}
    assert failed == {d.probe}, [(r.id, r.evidence) for r in report.results if r.status != PASS]
    owner = next(r for r in report.results if r.id == d.probe)
    assert owner.status == FAIL and owner.evidence
    assert report.ok == (owner.level != "core")
