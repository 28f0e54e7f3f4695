"""gateway.metrics: counters and their Prometheus text, parsed back by an independent reader."""

from __future__ import annotations

import math
import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.metrics import APPROVAL_WAIT_BUCKETS, Metrics, escape_label_value

FAMILIES = {
    "wiregate_sessions_open": "gauge",
    "wiregate_sessions_total": "counter",
    "wiregate_commands_total": "counter",
    "wiregate_approval_wait_seconds": "histogram",
    "wiregate_recorder_queue_depth": "gauge",
    "wiregate_upstream_connect_errors_total": "counter",
    "wiregate_bytes_proxied_total": "counter",
}

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)')


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            nxt = value[i + 1]
            out.append({"\\": "\\", '"': '"', "n": "\n"}[nxt])
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def parse(text: str) -> tuple[dict[str, str], dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """(types by family, value by (sample name, labels)); fails on any line the format does not allow."""
    assert text.endswith("\n")
    types: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text[:-1].split("\n"):
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert name not in types, f"family {name} declared twice"
            types[name] = kind
            continue
        m = _SAMPLE.fullmatch(line)
        assert m, f"not a sample line: {line!r}"
        labels: list[tuple[str, str]] = []
        raw = m.group(2) or ""
        pos = 0
        while pos < len(raw):
            lm = _LABEL.match(raw, pos)
            assert lm, f"bad labels in {line!r}"
            labels.append((lm.group(1), _unescape(lm.group(2))))
            pos = lm.end()
        key = (m.group(1), frozenset(labels))
        assert key not in samples, f"duplicate sample {line!r}"
        value = m.group(3)
        samples[key] = math.inf if value == "+Inf" else float(value)
    return types, samples


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_empty_render_declares_every_family_and_no_samples():
    types, samples = parse(Metrics().render())
    assert types == FAMILIES
    assert samples == {}


def test_sessions_commands_errors_and_bytes():
    m = Metrics()
    m.session_opened("postgres", "prod")
    m.session_opened("postgres", "prod")
    m.session_opened("ssh", "bastion")
    m.session_closed("postgres", "prod", bytes_in=100, bytes_out=2500)
    m.command("postgres", "allow")
    m.command("postgres", "allow")
    m.command("postgres", "deny")
    m.upstream_error("ssh", "bastion")
    _, s = parse(m.render())
    assert value(s, "wiregate_sessions_open", protocol="postgres", target="prod") == 1
    assert value(s, "wiregate_sessions_open", protocol="ssh", target="bastion") == 1
    assert value(s, "wiregate_sessions_total", protocol="postgres", target="prod") == 2
    assert value(s, "wiregate_commands_total", protocol="postgres", decision="allow") == 2
    assert value(s, "wiregate_commands_total", protocol="postgres", decision="deny") == 1
    assert value(s, "wiregate_upstream_connect_errors_total", protocol="ssh", target="bastion") == 1
    assert value(s, "wiregate_bytes_proxied_total", protocol="postgres", target="prod", direction="in") == 100
    assert value(s, "wiregate_bytes_proxied_total", protocol="postgres", target="prod", direction="out") == 2500
    assert m.sessions_open("postgres", "prod") == 1


def test_sessions_open_never_negative_and_counters_never_drop():
    m = Metrics()
    m.session_closed("http", "api", bytes_in=-5, bytes_out=float("nan"))  # a close without its open
    m.session_closed("http", "api", bytes_in=10, bytes_out=0)
    _, s = parse(m.render())
    assert value(s, "wiregate_sessions_open", protocol="http", target="api") == 0
    assert value(s, "wiregate_bytes_proxied_total", protocol="http", target="api", direction="in") == 10
    assert value(s, "wiregate_bytes_proxied_total", protocol="http", target="api", direction="out") == 0
    m.session_opened("http", "api")
    assert m.sessions_open("http", "api") == 1


def test_label_values_are_escaped():
    m = Metrics()
    nasty = 'a"b\\c\nd}e,f="g"'
    m.session_opened("postgres", nasty)
    text = m.render()
    assert '\\"' in text and "\\\\" in text and "\\n" in text
    # no raw newline inside a sample line: every line is a comment or a whole sample
    _, s = parse(text)
    assert value(s, "wiregate_sessions_open", protocol="postgres", target=nasty) == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_any_label_value_round_trips(text):
    m = Metrics()
    m.command("ssh", text)
    _, s = parse(m.render())
    assert value(s, "wiregate_commands_total", protocol="ssh", decision=text) == 1
    assert escape_label_value(text).count("\n") == 0


def test_histogram_buckets_are_cumulative_with_sum_and_count():
    m = Metrics()
    for seconds in (0.5, 1.0, 3, 45, 3600, 5000):
        m.approval_wait(seconds, "approved")
    m.approval_wait(-2, "expired")  # clock skew: counted as 0
    types, s = parse(m.render())
    assert types["wiregate_approval_wait_seconds"] == "histogram"
    expected = {1: 2, 5: 3, 15: 3, 30: 3, 60: 4, 120: 4, 300: 4, 600: 4, 1800: 4, 3600: 5}
    assert sorted(expected) == list(APPROVAL_WAIT_BUCKETS)
    for bound, count in expected.items():
        assert value(s, "wiregate_approval_wait_seconds_bucket", outcome="approved", le=str(bound)) == count
    assert value(s, "wiregate_approval_wait_seconds_bucket", outcome="approved", le="+Inf") == 6
    assert value(s, "wiregate_approval_wait_seconds_count", outcome="approved") == 6
    assert value(s, "wiregate_approval_wait_seconds_sum", outcome="approved") == pytest.approx(8649.5)
    assert value(s, "wiregate_approval_wait_seconds_bucket", outcome="expired", le="1") == 1
    assert value(s, "wiregate_approval_wait_seconds_sum", outcome="expired") == 0
    # bucket lines of one series in increasing le order, +Inf last, then sum and count
    lines = [ln for ln in m.render().splitlines() if 'outcome="approved"' in ln]
    assert lines[len(APPROVAL_WAIT_BUCKETS)].startswith('wiregate_approval_wait_seconds_bucket{outcome="approved",le="+Inf"}')
    assert lines[-2].startswith("wiregate_approval_wait_seconds_sum") and lines[-1].startswith(
        "wiregate_approval_wait_seconds_count")


def test_recorder_queue_depth_and_extra_gauges():
    m = Metrics()
    _, s = parse(m.render(recorder_queue_depth=None))
    assert not any(k[0] == "wiregate_recorder_queue_depth" for k in s)
    types, s = parse(m.render(recorder_queue_depth=7, extra={
        "wiregate_approvals_pending": 3,
        "wiregate_listeners": [({"protocol": "ssh"}, 1), ({"protocol": "http"}, 2)],
    }))
    assert value(s, "wiregate_recorder_queue_depth") == 7
    assert value(s, "wiregate_approvals_pending") == 3
    assert value(s, "wiregate_listeners", protocol="http") == 2
    assert types["wiregate_listeners"] == "gauge"
    for bad in ("9lives", "wiregate_sessions_total", "wiregate_approval_wait_seconds_count"):
        with pytest.raises(ValueError):
            m.render(extra={bad: 1})
    with pytest.raises(ValueError):
        m.render(extra={"x": [({"__name__": "y"}, 1)]})


def test_render_is_deterministic_whatever_the_order_of_events():
    a, b = Metrics(), Metrics()
    events = [("postgres", "b"), ("ssh", "a"), ("postgres", "a"), ("http", "z")]
    for protocol, target in events:
        a.session_opened(protocol, target)
        a.approval_wait(10, target)
    for protocol, target in reversed(events):
        b.session_opened(protocol, target)
        b.approval_wait(10, target)
    assert a.render() == b.render() == a.render()
    opened = [ln for ln in a.render().splitlines() if ln.startswith("wiregate_sessions_open{")]
    assert opened == sorted(opened)


def test_bad_buckets_are_refused():
    for bad in ((), (5, 1), (1, 1), (1, math.inf)):
        with pytest.raises(ValueError):
            Metrics(approval_buckets=bad)


def test_counts_from_several_threads_add_up():
    m = Metrics()

    def work() -> None:
        for _ in range(2000):
            m.command("postgres", "allow")
            m.session_opened("postgres", "t")
            m.session_closed("postgres", "t", 1, 2)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, s = parse(m.render())
    assert value(s, "wiregate_commands_total", protocol="postgres", decision="allow") == 8000
    assert value(s, "wiregate_sessions_total", protocol="postgres", target="t") == 8000
    assert value(s, "wiregate_sessions_open", protocol="postgres", target="t") == 0
    assert value(s, "wiregate_bytes_proxied_total", protocol="postgres", target="t", direction="out") == 16000
