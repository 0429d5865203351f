"""Where the proxy's time goes: the proxy run under a sampling profiler (`--hot-path`), its samples
folded into self time and inclusive time per function and self time per package.

Two profilers: pyinstrument (in the proxy's process; its JSON tree) and py-spy (`--profiler py-spy`:
samples from outside, so the proxy runs unmodified and C extensions' time lands on the Python frame
that called them; its raw collapsed stacks).  Idle time -- the event loop waiting in epoll -- is taken
out, so shares are of the time the worker was busy: pyinstrument shows it as the self time of the
frame that entered the loop, py-spy does not sample an idle thread at all."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

IDLE_FUNCTIONS = frozenset({"run_until_complete", "run_forever", "run_app", "select", "_run_once"})


PROFILERS = ("pyinstrument", "py-spy")
PY_SPY_RATE = 500  # samples per second


def profiler_argv(out: str, module: str, *args: str, profiler: str = "pyinstrument") -> list[str]:
    if profiler == "py-spy":
        exe = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
        return [exe, "record", "-r", str(PY_SPY_RATE), "-f", "raw", "--full-filenames", "-o", out, "--",
                sys.executable, "-m", module, *args]  # fmt: skip
    return [sys.executable, "-m", "pyinstrument", "-r", "json", "-o", out, "--show-all", "-m", module, *args]


# The checkout this harness runs from: its files belong to `proxy`, `adapters`, ... whatever the
# checkout's directory is called (a worktree is not named `main`).
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))).replace("\\", "/") + "/"


def _package(path: str) -> str:
    """A short owner for a file: `proxy`, `adapters`, `aiohttp`, `asyncio`, `logging`, ..."""
    path = path.replace("\\", "/")
    if path.startswith(ROOT):
        return path[len(ROOT) :].split("/", 1)[0].removesuffix(".py")
    parts = path.split("/")
    for anchor in ("site-packages", "main"):
        if anchor in parts:
            i = parts.index(anchor)
            if i + 1 < len(parts):
                return parts[i + 1].removesuffix(".py")
    for lib in ("asyncio", "logging", "json", "email", "http", "concurrent"):
        if lib in parts:
            return lib
    return os.path.basename(path).removesuffix(".py") or "<builtin>"


def fold(tree: dict[str, Any]) -> dict[str, Any]:
    """Busy self seconds per `package/file:function` and per package, and inclusive busy seconds (the
    non-idle self time of a function and everything it called; recursion counted once)."""
    self_t: dict[str, float] = defaultdict(float)
    incl: dict[str, float] = defaultdict(float)
    pkg: dict[str, float] = defaultdict(float)
    idle = 0.0
    stack: list[tuple[dict, str, frozenset]] = [(tree["root_frame"], "?:?", frozenset())]
    while stack:
        node, key, seen = stack.pop()
        children = node.get("children", [])
        if node["function"] != "[self]":
            key = _key(node["function"], node["file_path"])
            seen = seen | {key}
        own = node["time"] - sum(c["time"] for c in children)
        if own > 0:
            if key.split(":")[-1] in IDLE_FUNCTIONS:
                idle += own
            else:
                self_t[key] += own
                pkg[key.split("/")[0].split(":")[0]] += own
                for k in seen:
                    incl[k] += own
        stack += [(c, key, seen) for c in children]
    return {"busy_s": sum(self_t.values()), "idle_s": idle, "self": dict(self_t), "inclusive": dict(incl),
            "packages": dict(pkg)}  # fmt: skip


_FRAME = re.compile(r"(.*) \((.*):\d+\)$")


def _key(function: str, path: str) -> str:
    package, stem = _package(path), os.path.basename(path).removesuffix(".py")
    return f"{package}/{stem}:{function}" if stem != package else f"{package}:{function}"


def fold_collapsed(lines: Iterable[str], rate: float = PY_SPY_RATE) -> dict[str, Any]:
    """`fold` for py-spy's raw output: one `frame;frame;...;leaf COUNT` line per distinct stack, each
    frame `function (path:line)`, outermost first; a sample is 1/rate seconds of busy time."""
    self_t: dict[str, float] = defaultdict(float)
    incl: dict[str, float] = defaultdict(float)
    pkg: dict[str, float] = defaultdict(float)
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        seconds = int(count) / rate
        keys = []
        for frame in stack.split(";"):
            m = _FRAME.match(frame)
            keys.append(_key(m.group(1), m.group(2)) if m else frame)
        self_t[keys[-1]] += seconds
        pkg[keys[-1].split("/")[0].split(":")[0]] += seconds
        for k in set(keys):
            incl[k] += seconds
    return {"busy_s": sum(self_t.values()), "idle_s": 0.0, "self": dict(self_t), "inclusive": dict(incl),
            "packages": dict(pkg)}  # fmt: skip


def summary(path: str, top: int = 20, profiler: str = "pyinstrument") -> dict[str, Any]:
    with open(path) as f:
        folded = fold_collapsed(f) if profiler == "py-spy" else fold(json.load(f))
    busy = folded["busy_s"] or 1.0

    def ranked(d: dict[str, float], keep=lambda k: True) -> list[tuple[str, float]]:
        rows = sorted(((k, v / busy * 100) for k, v in d.items() if keep(k)), key=lambda kv: -kv[1])
        return [(k, round(v, 1)) for k, v in rows[:top]]

    ours = lambda k: k.startswith(("proxy/", "adapters/"))  # noqa: E731
    return {
        "busy_s": round(folded["busy_s"], 3),
        "idle_s": round(folded["idle_s"], 3),
        "packages_pct": ranked(folded["packages"]),
        "self_pct": ranked(folded["self"]),
        "inclusive_pct_ours": ranked({k: v for k, v in folded["inclusive"].items() if ours(k)}),
    }


def markdown(s: dict[str, Any]) -> str:
    out = [f"Busy {s['busy_s']} s (idle {s['idle_s']} s excluded).", "", "| Package | Self time (% of busy) |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in s["packages_pct"]]
    out += ["", "| Function (self) | % of busy |", "|---|---|"] + [f"| {k} | {v} |" for k, v in s["self_pct"]]
    out += ["", "| Gateway function (inclusive) | % of busy |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in s["inclusive_pct_ours"]]
    return "\n".join(out) + "\n"
