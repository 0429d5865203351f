"""The Prometheus text reader (proxy/promtext.py), checked against prometheus_client's own parser."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.promtext import read_samples

PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 12.0
vllm:num_requests_running{engine="1",model_name="meta-llama/Llama-3.1-8B-Instruct"} 3.0
# HELP vllm:num_requests_running_total_bogus a longer name sharing the prefix
# TYPE vllm:num_requests_running_total_bogus gauge
vllm:num_requests_running_total_bogus 99.0
# TYPE tgi_queue_size gauge
tgi_queue_size 4
# TYPE odd gauge
odd{path="/a b}c",quote="say \\"hi\\", ok",nl="x\\ny"} 7.5 1712345678000
# TYPE nan_gauge gauge
nan_gauge NaN
# TYPE inf_gauge gauge
inf_gauge +Inf
# TYPE sci gauge
sci 1.5e3
"""


def reference(text: str) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if not math.isnan(s.value):
                out.setdefault(s.name, []).append(s.value)
    return out


def test_agrees_with_prometheus_client_on_every_wanted_name():
    ref = reference(PAGE)
    names = ["vllm:num_requests_running", "vllm:num_requests_running_total_bogus", "tgi_queue_size", "odd",
             "inf_gauge", "sci"]
    assert read_samples(PAGE.encode(), names) == {n: ref[n] for n in names}
    assert read_samples(PAGE.encode(), ["vllm:num_requests_running"]) == {"vllm:num_requests_running": [12.0, 3.0]}


def test_only_wanted_names_and_nan_is_no_value():
    got = read_samples(PAGE.encode(), ["tgi_queue_size", "nan_gauge", "absent"])
    assert got == {"tgi_queue_size": [4.0]}
    assert read_samples(PAGE.encode(), []) == {}


def test_crlf_and_openmetrics_eof():
    text = "# TYPE a gauge\r\na 1\r\na{x=\"1\"} 2\r\n# EOF\r\n"
    assert read_samples(text.encode(), ["a"]) == {"a": [1.0, 2.0]}


@pytest.mark.parametrize("line", [
    b"a", b"a{x=\"1\"", b"a{x=\"1\"}", b"a notanumber", b"a{x=\"}\" 5", b"a{} ",
])
def test_malformed_lines_are_skipped_not_fatal(line):
    body = line + b"\na 3\n"
    assert read_samples(body, ["a"]) == {"a": [3.0]}


def test_empty_label_set_and_timestamp():
    assert read_samples(b"a{} 2 1700000000\n", ["a"]) == {"a": [2.0]}
