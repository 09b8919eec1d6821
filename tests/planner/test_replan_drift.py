"""The drift detector is a pure function of sample histories: no network needed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from planner.live.drift import DriftRule, History, Sample, device_factors, drift_of, informative

RULE = DriftRule(threshold=0.3, intervals=3, warmup=2, min_frames=3, settle_frames=0)


def stage(values, step=10, start=0):
    """Stage samples one second apart with `step` new frames each."""
    return [Sample(float(i), v, start + step * (i + 1)) for i, v in enumerate(values)]


def test_sustained_slow_down_is_a_drift():
    d = drift_of("d/1/s0", "n1", "stage", stage([1.0, 1.0, 1.0, 2.0, 2.1, 1.9]), RULE)
    assert d is not None and d.subject == "n1" and d.baseline == 1.0
    assert d.measured == 2.0 and abs(d.ratio - 2.0) < 1e-9 and d.since == 3.0


def test_a_short_spike_is_not():
    xs = stage([1.0, 1.0, 2.0, 2.0, 1.0])
    assert drift_of("k", "n", "stage", xs, RULE) is None
    assert drift_of("k", "n", "stage", stage([1.0, 1.0, 2.0, 2.0]), RULE) is None


def test_within_the_band_is_not():
    assert drift_of("k", "n", "stage", stage([1.0, 1.0, 1.29, 0.78, 1.25]), RULE) is None


def test_mixed_directions_are_not_sustained():
    assert drift_of("k", "n", "stage", stage([1.0, 1.0, 2.0, 0.5, 2.0]), RULE) is None


def test_speed_up_is_a_drift_too():
    d = drift_of("k", "n", "stage", stage([1.0, 1.0, 0.5, 0.5, 0.6]), RULE)
    assert d is not None and d.ratio < 0.7


def test_idle_stage_samples_say_nothing():
    # frames do not move: the mean is stale, whatever its value
    xs = stage([1.0, 1.0]) + [Sample(5.0 + i, 3.0, 20) for i in range(5)]
    assert drift_of("k", "n", "stage", xs, RULE) is None


def test_warm_up_frames_are_ignored_until_settled():
    rule = DriftRule(settle_frames=300)
    xs = [Sample(float(i), v, 100 * (i + 1)) for i, v in enumerate([5.0, 3.0, 1.0, 1.0, 1.0,
                                                                     1.0, 1.0])]
    assert len(informative(xs, rule.min_frames, rule.settle_frames)) == 5
    assert drift_of("k", "n", "stage", xs, rule) is None


def test_link_against_a_given_baseline():
    xs = [Sample(float(i), 4e6) for i in range(3)]
    d = drift_of("a->b", "a->b", "link", xs, RULE, baseline=12.5e6)
    assert d is not None and d.kind == "link" and d.measured == 4e6
    assert drift_of("a->b", "a->b", "link", xs[:2], RULE, baseline=12.5e6) is None


def test_history_keeps_only_this_epoch_and_device_factors_weigh_by_time():
    h = History("dep", 2)
    for t in range(6):
        slow = 1.0 if t < 2 else 3.0
        doc = {"stages": {"dep/2/s0": {"run_mean_s": 0.01 * slow, "frames": 400 + 50 * t},
                          "dep/2/s1": {"run_mean_s": 0.03 * slow, "frames": 400 + 50 * t},
                          "dep/1/s0": {"run_mean_s": 9.0, "frames": 400 + 50 * t},
                          "other/2/s0": {"run_mean_s": 9.0, "frames": 400 + 50 * t},
                          "dep/2/bad": {"run_mean_s": "x", "frames": 1}}}
        h.add_metrics("n1", doc, float(t))
    assert sorted(h.stages) == ["dep/2/s0", "dep/2/s1"]
    drifts = h.drifts(DriftRule())
    assert {d.key for d in drifts} == {"dep/2/s0", "dep/2/s1"}
    assert abs(device_factors(drifts)["n1"] - 3.0) < 1e-9


@given(st.lists(st.floats(0.77, 1.29), min_size=0, max_size=30))
def test_noise_inside_the_band_never_triggers(values):
    assert drift_of("k", "n", "stage", stage([1.0, 1.0, *values]), RULE) is None


@given(st.floats(1.31, 50.0), st.integers(3, 10))
def test_any_sustained_step_up_triggers(factor, n):
    d = drift_of("k", "n", "stage", stage([1.0, 1.0] + [factor] * n), RULE)
    assert d is not None and abs(d.ratio - factor) < 1e-9


def test_beyond_band_lists_current_deviations_sustained_or_not():
    from planner.live.drift import beyond_band

    h = History("dep", 1)
    for t, (a, b, c) in enumerate([(1, 1, 1), (1, 1, 1), (1, 1, 1), (1, 1, 1), (3, 1, 0.5)]):
        doc = {"stages": {f"dep/1/{k}": {"run_mean_s": v, "frames": 400 + 10 * t}
                          for k, v in zip("abc", (a, b, c), strict=True)}}
        h.add_metrics("n", doc, float(t))
    rule = DriftRule(intervals=1)
    assert {d.key: round(d.ratio, 2) for d in beyond_band(h, rule)} == {"dep/1/a": 3.0,
                                                                        "dep/1/c": 0.5}


# ---- interval means from the agent's cumulative run time (run_total_s) ----------------

def cumulative(per_interval, frames_each=50, start_frames=10, start_total=0.0):
    """Metrics docs of one stage whose mean run time over interval i is per_interval[i];
    run_mean_s stays at the first value (a stale 256-frame window) to show it is not read."""
    frames, total, docs = start_frames, start_total, []
    docs.append({"stages": {"dep/1/s0": {"run_mean_s": per_interval[0], "frames": frames,
                                         "run_total_s": total}}})
    for v in per_interval:
        frames += frames_each
        total += v * frames_each
        docs.append({"stages": {"dep/1/s0": {"run_mean_s": per_interval[0], "frames": frames,
                                             "run_total_s": total}}})
    return docs


def history_of(docs):
    h = History("dep", 1)
    for t, doc in enumerate(docs):
        h.add_metrics("n", doc, float(t))
    return h


def test_interval_means_see_a_change_in_the_next_message():
    # the stale run_mean_s never moves; the totals say 4x slower from interval 2 on, and
    # with intervals=3 the drift is due exactly at the third slow message
    rule = DriftRule(threshold=1.0, settle_frames=0)
    slow = [1e-3, 1e-3, 4e-3, 4e-3, 4e-3]
    assert history_of(cumulative(slow[:4])).drifts(rule) == []
    (d,) = history_of(cumulative(slow)).drifts(rule)
    assert d.subject == "n" and abs(d.baseline - 1e-3) < 1e-12
    assert abs(d.ratio - 4.0) < 1e-9 and d.since == 3.0  # message 3 closes interval 2


def test_interval_means_skip_the_first_frames_and_restart_after_a_reset():
    rule = DriftRule(skip_frames=4, min_frames=3)
    xs = [Sample(0.0, 0.5, 1, 0.5),  # the first (slow) invoke alone: before skip_frames
          Sample(1.0, 0.1, 11, 0.6),  # anchor
          Sample(2.0, 0.1, 12, 0.601),  # 1 new frame: too few, the anchor stays
          Sample(3.0, 0.1, 21, 0.61),  # 10 frames since the anchor: 0.01/10
          Sample(4.0, 0.1, 5, 0.02),  # counters started over (agent restarted): new anchor
          Sample(5.0, 0.1, 25, 0.06)]  # 20 frames, 0.04 s
    got = [(s.time, round(s.value, 9), s.frames) for s in
           informative(xs, rule.min_frames, rule.settle_frames, rule.skip_frames)]
    assert got == [(3.0, 0.001, 21), (5.0, 0.002, 25)]


def test_an_idle_stage_adds_no_interval_sample():
    docs = cumulative([1e-3, 1e-3]) + [cumulative([1e-3, 1e-3])[-1]] * 6  # frames stop
    h = history_of(docs)
    assert len(informative(h.stages["dep/1/s0"], 3, 0, 4)) == 2


@given(st.lists(st.tuples(st.integers(3, 500), st.floats(1e-5, 1.0)), min_size=1,
                max_size=20))
def test_interval_means_are_exact_for_any_frame_counts(intervals):
    frames, total = 10, 0.3
    xs = [Sample(0.0, 0.0, frames, total)]
    for k, (n, mean) in enumerate(intervals):
        frames, total = frames + n, total + n * mean
        xs.append(Sample(float(k + 1), 0.0, frames, total))
    got = [s.value for s in informative(xs, 3, 0, 4)]
    assert len(got) == len(intervals)
    assert all(abs(g - w) <= 1e-13 * max(1.0, total) for g, (_, w) in zip(got, intervals,
                                                                           strict=True))


def test_older_agents_without_totals_still_read_through_run_mean():
    docs = [{"stages": {"dep/1/s0": {"run_mean_s": v, "frames": 400 + 50 * t}}}
            for t, v in enumerate([1.0, 1.0, 3.0, 3.0, 3.0])]
    (d,) = history_of(docs).drifts(DriftRule())
    assert d.baseline == 1.0 and d.measured == 3.0


def test_busy_time_is_read_before_run_time():
    # a CPU quota stalls the agent outside the invoke too: busy time grows 8x, run time 2x
    docs = []
    for t in range(7):
        slow = t >= 3
        frames = 10 + 100 * t
        run = 1e-3 * 100 * (t + (1 if slow else 0) * (t - 2))
        busy = 1e-3 * 100 * (t + (7 if slow else 0) * (t - 2))
        docs.append({"stages": {"dep/1/s0": {"run_mean_s": 1e-3, "frames": frames,
                                             "run_total_s": run, "busy_total_s": busy}}})
    (d,) = history_of(docs).drifts(DriftRule(threshold=1.0))
    assert abs(d.ratio - 8.0) < 1e-9


def test_describe_names_a_link_once_and_a_stage_with_its_node():
    from planner.live.drift import Drift

    assert Drift("a->b", "a->b", "link", 1e7, 2e6, 0.0).describe() == \
        "bandwidth of a->b 1e+07 -> 2e+06 (0.20x)"
    assert Drift("d/1/s0", "n1", "stage", 1e-3, 4e-3, 0.0).describe() == \
        "stage time of d/1/s0 on n1 0.001 -> 0.004 (4.00x)"
