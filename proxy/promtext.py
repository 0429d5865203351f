"""A sans-IO reader for the few samples a load scrape needs from a Prometheus text exposition.

A model server's /metrics page holds hundreds of series (latency histograms per model and engine);
routing needs two or three gauges.  `read_samples(body, names)` scans the page once, line by line,
and parses only the lines whose metric name is wanted, so a scrape costs one pass over bytes instead
of building every family (prometheus_client's parser does that, and checks the result in the tests).

Handles the classic text format and OpenMetrics: `# HELP/# TYPE/# EOF` and blank lines are skipped,
label values may hold escaped quotes, commas, spaces and braces, a timestamp after the value is
ignored, `NaN` samples are dropped (a server says "no value").  A malformed line is skipped, never
fatal: one odd exporter line must not hide the gauges next to it.
"""

from __future__ import annotations

from collections.abc import Iterable


def read_samples(body: bytes, names: Iterable[str]) -> dict[str, list[float]]:
    """Every sample value of each wanted metric name, one per series (label set), in page order."""
    wanted = {n.encode(): n for n in names}
    if not wanted:
        return {}
    prefixes = tuple(wanted)
    out: dict[str, list[float]] = {}
    for line in body.split(b"\n"):
        if not line.startswith(prefixes):  # comments and unwanted families never get further
            continue
        parsed = _sample(line.rstrip(b"\r"))
        if parsed is None:
            continue
        name, value = parsed
        key = wanted.get(name)
        if key is not None and value == value:  # NaN != NaN
            out.setdefault(key, []).append(value)
    return out


def _sample(line: bytes) -> tuple[bytes, float] | None:
    """(metric name, value) of one sample line, or None when it is not one."""
    brace = line.find(b"{")
    space = line.find(b" ")
    if brace != -1 and (space == -1 or brace < space):
        name = line[:brace]
        end = _labels_end(line, brace + 1)
        if end == -1:
            return None
        rest = line[end + 1 :]
    else:
        if space == -1:
            return None
        name, rest = line[:space], line[space:]
    fields = rest.split()
    if not fields:
        return None
    try:
        return name, float(fields[0])
    except ValueError:
        return None


def _labels_end(line: bytes, i: int) -> int:
    """Index of the `}` closing a label set that opened before `i` (quotes and escapes respected)."""
    in_quotes = False
    n = len(line)
    while i < n:
        c = line[i]
        if in_quotes:
            if c == 0x5C:  # backslash: the next byte is escaped
                i += 1
            elif c == 0x22:
                in_quotes = False
        elif c == 0x22:
            in_quotes = True
        elif c == 0x7D:
            return i
        i += 1
    return -1
