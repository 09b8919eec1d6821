"""The wire contract is complete: node/README_WIRE.md documents every error code and topic,
and no code outside node/wire/codes.py spells an error code as a bare string."""

from __future__ import annotations

import ast
import importlib
import json
import re
from pathlib import Path

import pytest

from node.errors import WireError
from node.wire import messages as m
from node.wire import results as r
from node.wire.codes import Code, is_transient
from node.wire.topics import NODE_TOPICS, TOPICS, Topics

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "node" / "README_WIRE.md"
CODES_MODULE = ROOT / "node" / "wire" / "codes.py"
VALUES = {c.value for c in Code}


def table_rows(text: str) -> list[list[str]]:
    """Every markdown table row of `text`, as its stripped cells."""
    return [[c.strip() for c in ln.strip().strip("|").split("|")]
            for ln in text.splitlines() if ln.lstrip().startswith("|")]


def section(title: str) -> str:
    """The text of README_WIRE.md's `## title` section."""
    text = README.read_text()
    start = text.index(f"\n## {title}")
    end = text.find("\n## ", start + 1)
    return text[start:] if end < 0 else text[start:end]


def test_every_error_code_is_documented_with_its_transient_flag() -> None:
    rows = {r[0]: r for r in table_rows(section("Error codes")) if len(r) == 3}
    for code in Code:
        row = rows.get(f"`{code.value}`")
        assert row is not None, f"{code.value} is not in the error-code table of README_WIRE.md"
        assert row[1] == ("yes" if code.transient else "no"), f"{code.value}: transient {row[1]}"
        assert row[2], f"{code.value}: no meaning documented"
        assert code.meaning, f"{code.name} has no meaning"
    documented = {r[0].strip("`") for r in rows.values() if r[1] in ("yes", "no")}
    assert documented - VALUES == set(), "README_WIRE.md documents codes the enum lacks"
    assert len(documented) == len(Code)


def test_every_topic_is_documented_with_its_payload_type() -> None:
    rows = {r[0]: r for r in table_rows(section("MQTT control plane")) if len(r) == 3}
    for key, spec in TOPICS.items():
        shown = "`" + re.sub(r"\{(\w+)\}", r"<\1>", spec.pattern) + "`"
        row = rows.get(shown)
        assert row is not None, f"topic {key} ({shown}) is not in README_WIRE.md's topic table"
        assert row[1].startswith("yes" if spec.retained else "no"), f"{shown}: retained {row[1]}"
        assert row[2].startswith(f"`{spec.payload}"), f"{shown}: payload is not {spec.payload}"


def resolve(name: str) -> type:
    """A payload type name of the topic table -> the class (node.wire.messages or dotted)."""
    if "." not in name:
        return m.Command if name == "Command" else m.MESSAGES[getattr(m, name).TYPE]
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


@pytest.mark.parametrize("key", sorted(TOPICS))
def test_every_topic_names_a_payload_type_that_exists(key: str) -> None:
    assert resolve(TOPICS[key].payload) is not None


def test_topic_names_built_from_the_table() -> None:
    t = Topics("lab")
    assert t.deployment("d") == "tilefleet/lab/deployments/d"
    assert t.replans("d") == "tilefleet/lab/deployments/d/replans"
    assert t.client_replies("c") == "tilefleet/lab/clients/c/replies"
    assert t.parse_deployment("tilefleet/lab/deployments/d") == "d"
    assert t.parse_deployment("tilefleet/lab/deployments/d/replans") is None
    assert t.parse_deployment("tilefleet/lab/nodes/n/status") is None
    assert set(NODE_TOPICS) == {"status", "resources", "metrics", "cmd", "replies"}
    for suffix in NODE_TOPICS:
        assert t.parse(t.node("n1", suffix)) == ("n1", suffix)


def test_codes_are_their_wire_strings() -> None:
    assert json.dumps({"code": Code.BUSY, Code.BUSY: 1}) == '{"code": "busy", "busy": 1}'
    assert Code("unknown_epoch") is Code.UNKNOWN_EPOCH and f"{Code.EVICTED}" == "evicted"
    # the client's retry set, as it was before the enum held it
    assert {c.value for c in Code if c.transient} == {
        "send_timeout", "send_failed", "evicted", "incomplete", "busy", "unknown_epoch",
        "unknown_stage", "unknown_deployment", "no_reply", "timeout", "unsent"}
    assert is_transient("busy") and not is_transient("memory_budget")
    assert not is_transient("a_code_from_a_newer_peer")


# ---- no bare code strings -----------------------------------------------------------

def _is_code_expr(n: ast.AST) -> bool:
    """`code`, `x.code` or `x.get("code", ...)`: an expression that holds an error code."""
    if isinstance(n, ast.Attribute | ast.Name):
        return getattr(n, "attr", getattr(n, "id", "")) == "code"
    return (isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and n.func.attr == "get" and bool(n.args) and isinstance(n.args[0], ast.Constant)
            and n.args[0].value == "code")


def _code_strings(n: ast.AST | None) -> list[ast.Constant]:
    elts = n.elts if isinstance(n, ast.Tuple | ast.Set | ast.List) else [n]
    return [e for e in elts if isinstance(e, ast.Constant) and e.value in VALUES]


def bare_codes(tree: ast.AST) -> list[ast.Constant]:
    """String constants equal to a code where a code is expected: `code=` arguments,
    comparisons with a code, `{"code": ...}`, `.get("code", ...)` defaults, `x.code or ...`,
    `code = ...` in a class body and `code=` parameter defaults."""
    found: list[ast.Constant] = []
    for n in ast.walk(tree):
        if isinstance(n, ast.keyword) and n.arg == "code":
            found += _code_strings(n.value)
        elif isinstance(n, ast.Compare) and any(map(_is_code_expr, [n.left, *n.comparators])):
            for side in (n.left, *n.comparators):
                found += _code_strings(side)
        elif isinstance(n, ast.Dict):
            found += [c for k, v in zip(n.keys, n.values, strict=True)
                      if isinstance(k, ast.Constant) and k.value == "code"
                      for c in _code_strings(v)]
        elif isinstance(n, ast.Call) and _is_code_expr(n) and len(n.args) == 2:
            found += _code_strings(n.args[1])
        elif isinstance(n, ast.BoolOp) and _is_code_expr(n.values[0]):
            for v in n.values[1:]:
                found += _code_strings(v)
        elif isinstance(n, ast.ClassDef):
            found += [c for s in n.body if isinstance(s, ast.Assign)
                      and any(getattr(t, "id", "") == "code" for t in s.targets)
                      for c in _code_strings(s.value)]
        elif isinstance(n, ast.FunctionDef):
            a = n.args
            pos = a.posonlyargs + a.args
            pairs = [*zip(pos[len(pos) - len(a.defaults):], a.defaults, strict=True),
                     *zip(a.kwonlyargs, a.kw_defaults, strict=True)]
            found += [c for arg, d in pairs if arg.arg == "code" for c in _code_strings(d)]
    return found


def test_the_scan_finds_bare_codes() -> None:
    src = ('raise E("x", code="busy")\nif exc.code in ("timeout", "offline"): pass\n'
           'd = {"code": "offline"}\ne.get("code", "error")\nr.get("code") or "error"\n'
           'class A:\n    code = "store"\ndef f(code="error"): pass\n'
           'if s.get("state") == "offline": pass\n')
    found = sorted(bare_codes(ast.parse(src)), key=lambda c: (c.lineno, c.col_offset))
    assert [c.value for c in found] == [
        "busy", "timeout", "offline", "offline", "error", "error", "store", "error"]


def test_no_bare_error_code_strings_outside_the_enum() -> None:
    hits = []
    for path in sorted([*ROOT.glob("node/**/*.py"), *ROOT.glob("planner/**/*.py")]):
        if path == CODES_MODULE:
            continue
        for c in bare_codes(ast.parse(path.read_text(), str(path))):
            hits.append(f"{path.relative_to(ROOT)}:{c.lineno}: {c.value!r} "
                        f"(use Code.{Code(c.value).name})")
    assert not hits, "bare error codes:\n" + "\n".join(hits)


# ---- typed results and stage metrics: the same keys on the wire ----------------------

# the keys each command's result had on the wire before it was typed (older planners
# read these); a result type must encode to exactly them
WIRE_KEYS = {
    "deploy": {"deployment", "epoch", "stages", "loaded", "reused", "memory"},
    "undeploy": {"deployment", "retired"}, "retire": {"deployment", "retired"},
    "activate": {"deployment", "epoch", "retired"},
    "profile": {"median_s", "times_s", "settings"},
    "probe": {"endpoint", "rtt_s", "transfer_s", "nbytes", "bandwidth_bps"},
    "ping": {"time"},
    "status": {"deployments", "parts", "memory", "data_endpoint", "service_endpoint",
               "errors", "frames_in", "bytes_in", "bytes_out"},
}
STAGE_KEYS = {"frames", "errors", "bytes_out", "run_p50_s", "run_p95_s", "run_mean_s",
              "run_total_s", "busy_total_s", "turnaround_p50_s", "queue", "pending", "part",
              "tile"}
SAMPLES = {
    "deploy": r.DeployResult("d", 2, ("s0", "s1"), ("s1",), ("s0",), r.MemoryUse(100, 40)),
    "undeploy": r.RetireResult("d", (1, 2)), "retire": r.RetireResult("d", (1,)),
    "activate": r.ActivateResult("d", 3, (2,)),
    "profile": r.ProfileResult({"ab": 0.5}, {"ab": (0.5, 0.6)}, "tflite/xnnpack/t4"),
    "probe": r.ProbeResult(0.001, 0.01, 1000, 8e5, "tcp://h:1"),
    "ping": r.PingResult(12.5),
    "status": r.StatusResult({"d": {"1": ("s0",)}}, ("ab",), r.MemoryUse(0, 7), "tcp://h:1",
                             "tcp://h:2", {"busy": 2}, 3, 4, 5),
}


def test_command_results_encode_to_their_wire_keys_and_decode_back() -> None:
    assert set(SAMPLES) == set(r.RESULTS) == set(m.COMMANDS)
    for kind, result in SAMPLES.items():
        wire = json.loads(m.encode(m.Reply("i", True, "n", result=result)))["result"]
        assert set(wire) == WIRE_KEYS[kind], kind
        assert r.decode_result(kind, wire) == result, kind
        newer = {**wire, "added_later": [1, 2]}  # a newer agent's extra key is ignored
        assert r.decode_result(kind, newer) == result, kind
    assert json.loads(m.encode(m.Reply("i", True, result=SAMPLES["deploy"])))["result"][
        "memory"] == {"budget_bytes": 100, "in_use_bytes": 40}


def test_a_malformed_result_is_a_bad_message() -> None:
    with pytest.raises(WireError) as e:
        r.decode_result("ping", {})  # time missing
    assert e.value.code == Code.BAD_MESSAGE
    with pytest.raises(WireError) as e:
        r.decode_result("probe", {"rtt_s": "fast", "transfer_s": 1.0, "nbytes": 1,
                                  "bandwidth_bps": 1.0})
    assert e.value.code == Code.BAD_MESSAGE
    with pytest.raises(WireError):
        r.decode_result("status", [1, 2])


def test_stage_metrics_keep_their_keys_and_read_older_agents() -> None:
    st = r.StageMetrics(frames=3, run_total_s=0.3, busy_total_s=0.4, part="ab")
    msg = m.Metrics("n", 1.0, 2.0, 3, {"d/0/s0": st}, {"busy": 1})
    wire = json.loads(m.encode(msg))
    assert set(wire["stages"]["d/0/s0"]) == STAGE_KEYS
    assert m.decode(m.encode(msg)) == msg
    old = {"frames": 9, "errors": 0, "run_mean_s": 0.01, "queue": 0}  # before the totals
    got = r.decode_stages({"d/0/s0": old, "d/0/bad": {"frames": "x"}, "d/0/no": 3})
    assert list(got) == ["d/0/s0"]
    assert got["d/0/s0"].run_total_s is None and got["d/0/s0"].busy_total_s is None
    assert got["d/0/s0"].frames == 9 and got["d/0/s0"].run_mean_s == 0.01


def test_every_result_type_is_documented_with_its_command() -> None:
    rows = {r_[0]: r_ for r_ in table_rows(section("MQTT control plane")) if len(r_) == 3}
    for kind, cls in r.RESULTS.items():
        row = rows.get(f"`{kind}`")
        assert row is not None and row[2].startswith(f"`{cls.__name__} {{"), (kind, row)
