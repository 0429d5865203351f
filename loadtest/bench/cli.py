"""`llm-proxy bench`: run a preset, write report.md, report.json and latency.png, print the table."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import replace

from . import hopratio, hotpath, plot, report, runner
from . import isolated as isolated_run
from .plan import PRESETS, isolated
from .procs import usable_cpus
from .scenario import ALL_PATHS


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="llm-proxy bench", description="Measure the latency the proxy adds.",
                                epilog="`llm-proxy bench routing --help`: routing strategies against emulated "
                                       "continuous-batching servers (docs/ROUTING.md).")
    # `llm-proxy bench` hands over argparse.REMAINDER, which only captures when the first word is not
    # an option: hence the positional preset (`llm-proxy bench smoke --out DIR`).
    p.add_argument("preset_name", nargs="?", choices=sorted(PRESETS), help="preset (same as --smoke / --full)")
    preset = p.add_mutually_exclusive_group()
    preset.add_argument("--smoke", action="store_const", const="smoke", dest="preset", help="< 1 minute (CI)")
    preset.add_argument("--full", action="store_const", const="full", dest="preset", help="the published run (default)")
    p.add_argument("--out", help="output directory (default bench-results/<preset>-<time>)")
    p.add_argument("--profiles", help="comma-separated latency profiles to keep (default: all of the preset)")
    p.add_argument("--paths", help=f"comma-separated paths to keep, from: {', '.join(ALL_PATHS)}")
    p.add_argument("--open-streams", type=int, help="concurrent streams for the memory test (0 = skip)")
    p.add_argument("--soak-seconds", "--soak", type=float, metavar="SECONDS", dest="soak_seconds",
                   help="constant-load duration for the RSS growth check (0 = skip; 600 for the published figure)")
    p.add_argument("--compare-hop", metavar="HOPS",
                   help="reference hops in the same run, comma-separated: bare (default), minimal (issue 16's "
                        "minimal aiohttp + uvloop hop: adds the gateway / hop ratios; without a preset it runs `hop`)")
    p.add_argument("--isolated", action="store_true",
                   help="issue 16's setup (with --compare-hop minimal, implied): gateway and hop each pinned alone on "
                        "one CPU, a lean canned backend and the load on the others, wrk for throughput "
                        "(docs/PERFORMANCE.md); needs >= 2 CPUs")
    p.add_argument("--wrk-seconds", type=int, default=5, metavar="S", help="--isolated: seconds per wrk round")
    p.add_argument("--rounds", type=int, default=3, help="--isolated: wrk rounds per target (interleaved)")
    p.add_argument("--latency-requests", type=int, default=300, metavar="N",
                   help="--isolated: JSON requests per target and round at concurrency 1 (streams: half)")
    p.add_argument("--one-write", action="store_true",
                   help="--isolated: the lean backend writes each stream at once, not one write per event")
    p.add_argument("--server-http", metavar="SERVERS",
                   help="the gateway's HTTP server (config server.http: raw, aiohttp); with --isolated a list: the "
                        "first is the gateway's, each other one a gateway target of its own (proxy-<server>)")
    p.add_argument("--compare", metavar="URL", help="another OpenAI-compatible proxy to run through the same harness")
    p.add_argument("--compare-cmd", metavar="CMD",
                   help="start command for the other proxy; {port} and {openai_url} (the emulator) are filled in")
    p.add_argument("--compare-model", help="model name to send to the other proxy (default: the emulator's)")
    p.add_argument("--compare-profile", default="zero", help="latency profile the other proxy's backend uses")
    p.add_argument("--log-level", default="info", help="proxy log level (info = one access line per request)")
    p.add_argument("--hot-path", type=int, default=0, metavar="N",
                   help="also profile a proxy with N requests per path (0 = skip)")
    p.add_argument("--profiler", choices=hotpath.PROFILERS, default="pyinstrument",
                   help="--hot-path's sampler: pyinstrument (in process) or py-spy (from outside, `pip install py-spy`)")
    p.add_argument("--key-stores", help="also measure a limited client key with these state stores: sqlite,redis "
                   "(redis needs redis-server on PATH)")
    p.add_argument("--response-stores", help="state stores of the Responses API points' `store: true` proxies: "
                   "sqlite,redis (the `responses` preset's default; redis needs redis-server on PATH)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-plot", action="store_true")
    return p.parse_args(argv)


def hops(args: argparse.Namespace) -> tuple[str, ...]:
    names = tuple(h for h in (args.compare_hop or ("minimal" if args.isolated else "bare")).split(",") if h)
    unknown = set(names) - set(runner.HOPS)
    if unknown:
        raise SystemExit(f"llm-proxy bench: unknown --compare-hop {', '.join(sorted(unknown))} (bare, minimal)")
    if args.isolated and names != ("minimal",):
        raise SystemExit("llm-proxy bench --isolated compares against the minimal hop only (--compare-hop minimal)")
    return names


def server_http(args: argparse.Namespace) -> tuple[str, ...]:
    names = tuple(s for s in (args.server_http or "").split(",") if s)
    if len(names) > 1 and not args.isolated:
        raise SystemExit("llm-proxy bench: several --server-http values need --isolated")
    return names


def build_plan(args: argparse.Namespace):
    if args.isolated:
        if args.preset or args.preset_name:
            raise SystemExit("llm-proxy bench --isolated runs its own plan; drop the preset")
        plan = isolated(args.wrk_seconds, args.rounds, args.latency_requests)
    else:
        default = "hop" if args.compare_hop and "minimal" in hops(args) else "full"
        plan = PRESETS[args.preset or args.preset_name or default]()
    points = plan.points
    if args.profiles:
        keep = set(args.profiles.split(","))
        points = [lp for lp in points if lp.profile in keep]
    if args.paths:
        keep = set(args.paths.split(","))
        points = [lp for lp in points if lp.path in keep]
    plan = replace(plan, points=points)
    if args.open_streams is not None:
        plan.open_streams = args.open_streams
    if args.soak_seconds is not None:
        plan.soak_seconds = args.soak_seconds
    if args.key_stores is not None:
        plan.key_stores = tuple(s for s in args.key_stores.split(",") if s)
    if args.response_stores is not None:
        plan.response_stores = tuple(s for s in args.response_stores.split(",") if s)
    return plan


def write_outputs(results: dict, out_dir: str, make_plot: bool) -> dict[str, str]:
    files = {"markdown": os.path.join(out_dir, "report.md"), "json": os.path.join(out_dir, "report.json")}
    with open(files["markdown"], "w") as f:
        f.write(report.markdown(results))
        if results.get("wrk_points") or results.get("skipped"):
            f.write("\n" + isolated_run.markdown(results))
        for ratios in [results.get("hop_ratios"), *results.get("hop_ratios_others", [])]:
            if ratios:
                f.write("\n" + hopratio.markdown(ratios))
        if results.get("hot_path"):
            f.write("\n" + hotpath.markdown(results["hot_path"]))
    with open(files["json"], "w") as f:
        json.dump(results, f, indent=1)
    if make_plot:
        png = plot.plot(results, os.path.join(out_dir, "latency.png"))
        if png:
            files["plot"] = png
    return files


def _progress(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str]) -> int:
    argv = argv[1:] if argv[:1] == ["--"] else argv
    if argv[:1] == ["routing"]:  # the routing-strategy scenario has its own harness and options
        from . import routing

        return routing.main(argv[1:])
    args = parse_args(argv)
    plan = build_plan(args)
    out_dir = args.out or os.path.join("bench-results", f"{plan.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    opts = runner.Options(
        out_dir=out_dir, log_level=args.log_level, compare_url=args.compare, compare_cmd=args.compare_cmd,
        compare_model=args.compare_model, compare_profile=args.compare_profile, seed=args.seed, hot_path=args.hot_path,
        hops=hops(args), profiler=args.profiler, server_http=server_http(args),
    )  # fmt: skip
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass
    if args.isolated:
        cpus = usable_cpus()
        isolated_run.split_cpus(cpus)  # refuse before starting anything
        run = isolated_run.run(plan, opts, cpus, args.one_write, progress=_progress)
    else:
        run = runner.run(plan, opts, progress=_progress)
    started, load_start = time.monotonic(), os.getloadavg()
    results = asyncio.run(run)
    results["seconds"] = round(time.monotonic() - started, 1)
    # Other processes on the machine share its cores: every figure is read with the load next to it.
    results["machine"] = {"cpus": os.cpu_count(), "uname": " ".join(os.uname()), "loadavg_start": load_start,
                          "loadavg_end": os.getloadavg()}  # fmt: skip
    if "minimal" in opts.hops:
        results["hop_ratios"] = hopratio.compare(results)
        results["hop_ratios_others"] = [hopratio.compare(results, gateway=f"proxy-{s}") for s in opts.server_http[1:]]
    files = write_outputs(results, out_dir, not args.no_plot)
    print(report.markdown(results))
    if results.get("wrk_points") or results.get("skipped"):
        print(isolated_run.markdown(results))
    for ratios in [results.get("hop_ratios"), *results.get("hop_ratios_others", [])]:
        if ratios:
            print(hopratio.markdown(ratios))
    print("wrote " + ", ".join(files.values()))
    errors = sum(t["errors"] for p in results["points"] + results.get("wrk_points", []) for t in p["targets"].values())
    return 1 if errors else 0
