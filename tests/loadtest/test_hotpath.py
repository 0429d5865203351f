"""The profile folding of `--hot-path`: files of this checkout (whatever its directory is called)
belong to their top-level package, libraries to theirs, and idle loop time is left out."""

from __future__ import annotations

import pytest

from loadtest.bench import hotpath


@pytest.mark.parametrize(("path", "owner"), [
    (hotpath.ROOT + "proxy/relay.py", "proxy"),
    (hotpath.ROOT + "adapters/sse.py", "adapters"),
    ("/venv/lib/python3.11/site-packages/aiohttp/web_protocol.py", "aiohttp"),
    ("/usr/lib/python3.11/asyncio/events.py", "asyncio"),
])  # fmt: skip
def test_package_of_a_file(path, owner):
    assert hotpath._package(path) == owner


def test_fold_splits_self_time_and_drops_idle():
    def frame(fn, path, time, children=()):
        return {"function": fn, "file_path": path, "time": time, "children": list(children)}

    relay = frame("feed", hotpath.ROOT + "proxy/relay.py", 2.0, [frame("split", hotpath.ROOT + "adapters/sse.py", 0.5)])
    root = frame("run_forever", "/usr/lib/python3.11/asyncio/base_events.py", 5.0, [relay])
    out = hotpath.fold({"root_frame": root})
    assert out["idle_s"] == pytest.approx(3.0)
    assert out["packages"] == {"proxy": pytest.approx(1.5), "adapters": pytest.approx(0.5)}
    assert out["inclusive"]["proxy/relay:feed"] == pytest.approx(2.0)


def test_fold_collapsed_reads_py_spy_raw_stacks():
    relay, sse = hotpath.ROOT + "proxy/relay.py", hotpath.ROOT + "adapters/sse.py"
    lines = [
        f"main (<frozen runpy>:1);feed ({relay}:10);split ({sse}:20) 30\n",
        f"main (<frozen runpy>:1);feed ({relay}:11) 20\n",
        "\n",  # blank and malformed lines are skipped
    ]
    out = hotpath.fold_collapsed(lines, rate=100)
    assert out["busy_s"] == pytest.approx(0.5)
    assert out["self"] == {"adapters/sse:split": pytest.approx(0.3), "proxy/relay:feed": pytest.approx(0.2)}
    assert out["inclusive"]["proxy/relay:feed"] == pytest.approx(0.5)
    assert out["packages"] == {"adapters": pytest.approx(0.3), "proxy": pytest.approx(0.2)}


def test_py_spy_argv_records_raw_full_filenames():
    argv = hotpath.profiler_argv("/tmp/o.txt", "proxy.cli", "serve", profiler="py-spy")
    assert argv[0].endswith("py-spy") and argv[1] == "record"
    assert argv[argv.index("-f") + 1] == "raw" and "--full-filenames" in argv
    assert argv[argv.index("--") + 1 :][1:] == ["-m", "proxy.cli", "serve"]
