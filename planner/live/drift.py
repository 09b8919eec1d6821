"""Drift detection (pure): per-stage and per-link sample histories and the sustained-drift rule.

A stage's sample is its mean busy time per frame over one metrics interval: the agent
reports the cumulative `busy_total_s` (time spent on frames, queue waits and idle gaps
left out; see node.metrics.StageStats) with `frames`, and the mean between two messages
is Δbusy_total_s / Δframes — every frame of the interval counts (so the throttled
bursts of a CPU quota do; a median would hide them), and a change shows in the next
message. Busy time rather than run time: a CPU quota stalls the whole agent, also while
it receives and sends, and the re-plan scales the node's op times by this ratio. Agents
that report only `run_total_s` are read through it, older ones through `run_mean_s`
(a mean over their last 256 frames, which trails a change by up to 256 frames). A link's sample is a
probed bandwidth. The reference a sample is compared with is the stage's own baseline —
the median of its first `warmup` samples after a (re)deploy — or a given prediction.
The baseline makes the rule insensitive to a constant prediction error and measures
what changed since the deploy.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from node.wire.messages import Metrics
from node.wire.results import decode_stages


@dataclass(frozen=True)
class DriftRule:
    """When a change counts: beyond `threshold` for `intervals` samples in a row."""

    threshold: float = 0.3  # relative change: x1.3 slower or faster
    intervals: int = 3  # consecutive informative samples beyond the threshold
    warmup: int = 2  # informative samples that set a new stage's baseline
    min_frames: int = 3  # a stage sample needs this many new frames to say anything
    # Interval means start after this many frames of the stage: its first invokes
    # allocate and warm caches, and would inflate the baseline.
    skip_frames: int = 4
    # A `run_mean_s` (older agents) covers the last 256 frames, the first (slow) invoke
    # included: only trust it once that invoke has left the window.
    settle_frames: int = 300

    def beyond(self, ratio: float) -> int:
        """+1 if ratio > 1 + threshold, -1 if below its inverse (2x slower mirrors 2x faster)."""
        if ratio > 1.0 + self.threshold:
            return 1
        if ratio * (1.0 + self.threshold) < 1.0:
            return -1
        return 0


@dataclass(frozen=True)
class Sample:
    """One observation: seconds per frame (stage) or bytes/s (link) at `time`."""

    time: float
    value: float  # a stage's reported run_mean_s; a link's bytes/s
    frames: int = -1  # cumulative frames of the stage; -1 for links (always informative)
    total: float = -1.0  # cumulative run seconds of the stage; -1 when not reported


@dataclass(frozen=True)
class Drift:
    """A sustained change of one stage or link."""

    key: str  # stage key "dep/epoch/stage" or link "a->b"
    subject: str  # the node (stage) or "a->b" (link)
    kind: str  # "stage" or "link"
    baseline: float
    measured: float
    since: float  # time of the first sample of the run beyond the threshold

    @property
    def ratio(self) -> float:
        return self.measured / self.baseline if self.baseline > 0 else float("inf")

    def describe(self) -> str:
        where = (f"stage time of {self.key} on {self.subject}" if self.kind == "stage"
                 else f"bandwidth of {self.key}")  # a link's key is its subject "a->b"
        return f"{where} {self.baseline:.4g} -> {self.measured:.4g} ({self.ratio:.2f}x)"


def informative(samples: Sequence[Sample], min_frames: int, settle_frames: int = 0,
                skip_frames: int = 0) -> list[Sample]:
    """Samples that carry news: links always; stages as means over >= min_frames new frames.

    A stage sample with a cumulative `total` becomes the mean over the frames since the
    previous one used (Δtotal / Δframes; the first frames, up to `skip_frames`, left
    out); one without is its reported mean, once `settle_frames` frames ran.
    """
    out: list[Sample] = []
    last = None  # frames of the last legacy sample used
    anchor: Sample | None = None  # the cumulative sample interval means start from
    for s in samples:
        if s.frames < 0:
            out.append(s)
        elif s.total >= 0:
            if s.frames < skip_frames:
                continue
            if anchor is None or s.frames < anchor.frames or s.total < anchor.total:
                anchor = s  # the first, or the agent's counters started over
            elif s.frames - anchor.frames >= min_frames:
                mean = (s.total - anchor.total) / (s.frames - anchor.frames)
                out.append(Sample(s.time, mean, s.frames))
                anchor = s
        elif s.value > 0 and s.frames >= settle_frames and (
                last is None or s.frames - last >= min_frames):
            out.append(s)
            last = s.frames
    return out


def _informative(samples: Sequence[Sample], rule: DriftRule) -> list[Sample]:
    return informative(samples, rule.min_frames, rule.settle_frames, rule.skip_frames)


def drift_of(key: str, subject: str, kind: str, samples: Sequence[Sample], rule: DriftRule,
             baseline: float | None = None) -> Drift | None:
    """The drift of one history under `rule`, or None (also while warming up)."""
    xs = _informative(samples, rule)
    if baseline is None:
        if len(xs) < rule.warmup + rule.intervals:
            return None
        baseline = statistics.median(s.value for s in xs[:rule.warmup])
        xs = xs[rule.warmup:]
    if baseline <= 0 or len(xs) < rule.intervals:
        return None
    last = xs[-rule.intervals:]
    signs = {rule.beyond(s.value / baseline) for s in last}
    if len(signs) != 1 or 0 in signs:
        return None
    return Drift(key, subject, kind, baseline, statistics.median(s.value for s in last),
                 last[0].time)


def current_of(key: str, subject: str, kind: str, samples: Sequence[Sample], rule: DriftRule,
               baseline: float | None = None) -> Drift | None:
    """Baseline vs the median of the last `intervals` samples, sustained or not (None: no data)."""
    xs = _informative(samples, rule)
    if baseline is None:
        if len(xs) < rule.warmup + 1:
            return None
        baseline = statistics.median(s.value for s in xs[:rule.warmup])
        xs = xs[rule.warmup:]
    if baseline <= 0 or not xs:
        return None
    last = xs[-rule.intervals:]
    return Drift(key, subject, kind, baseline, statistics.median(s.value for s in last),
                 last[0].time)


@dataclass
class History:
    """Bounded sample histories of one deployment epoch's stages and links."""

    deployment: str
    epoch: int
    keep: int = 32
    stages: dict[str, deque[Sample]] = field(default_factory=dict)
    stage_node: dict[str, str] = field(default_factory=dict)
    links: dict[str, deque[Sample]] = field(default_factory=dict)

    def add_metrics(self, node: str, doc: Metrics | Mapping[str, Any], now: float) -> int:
        """Take this epoch's stage samples from one `metrics` message (decoded, or its raw
        JSON, whose malformed stage entries are left out); returns how many."""
        prefix = f"{self.deployment}/{self.epoch}/"
        stages = doc.stages if isinstance(doc, Metrics) else decode_stages(doc.get("stages"))
        n = 0
        for key, st in stages.items():
            if not key.startswith(prefix):
                continue
            # busy time (what a frame costs the node) when the agent reports it
            total = st.busy_total_s if st.busy_total_s is not None else st.run_total_s
            s = Sample(now, st.run_mean_s, st.frames, -1.0 if total is None else total)
            self.stages.setdefault(key, deque(maxlen=self.keep)).append(s)
            self.stage_node[key] = node
            n += 1
        return n

    def add_link(self, a: str, b: str, bandwidth: float, now: float) -> None:
        self.links.setdefault(f"{a}->{b}", deque(maxlen=self.keep)).append(
            Sample(now, bandwidth))

    def drifts(self, rule: DriftRule, link_baselines: Mapping[str, float] | None = None
               ) -> list[Drift]:
        """Every sustained drift now: stages against their baseline, links against the profile."""
        out = [d for key, xs in sorted(self.stages.items())
               if (d := drift_of(key, self.stage_node[key], "stage", xs, rule))]
        for key, xs in sorted(self.links.items()):
            base = (link_baselines or {}).get(key)
            if (d := drift_of(key, key, "link", xs, rule, base)):
                out.append(d)
        return out


def beyond_band(history: History, rule: DriftRule, link_baselines: Mapping[str, float] | None
                = None) -> list[Drift]:
    """Every stage and link whose recent samples are outside the band now, sustained or not.

    A re-plan uses these too: when one drift triggers it, the others' current speeds
    (e.g. a neighbour that got faster as the drifting node freed a core) should be in the
    profile as well.
    """
    out = [d for key, xs in sorted(history.stages.items())
           if (d := current_of(key, history.stage_node[key], "stage", xs, rule))
           and rule.beyond(d.ratio)]
    for key, xs in sorted(history.links.items()):
        base = (link_baselines or {}).get(key)
        if base and (d := current_of(key, key, "link", xs, rule, base)) and rule.beyond(d.ratio):
            out.append(d)
    return out


def device_factors(drifts: Sequence[Drift]) -> dict[str, float]:
    """Per node: how much slower its stages got (sum measured / sum baseline)."""
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    for d in drifts:
        if d.kind == "stage":
            num[d.subject] = num.get(d.subject, 0.0) + d.measured
            den[d.subject] = den.get(d.subject, 0.0) + d.baseline
    return {n: num[n] / den[n] for n in num if den[n] > 0}


def link_bandwidths(drifts: Sequence[Drift]) -> dict[tuple[str, str], float]:
    """Measured bytes/s of every drifting link, by (from, to)."""
    out = {}
    for d in drifts:
        if d.kind == "link":
            a, _, b = d.key.partition("->")
            out[(a, b)] = d.measured
    return out
