"""The continuous-batching scheduler, driven by hand and in virtual time."""

from __future__ import annotations

import pytest

from llmload.simulator.perfmodel import PerfModel
from llmload.simulator.profiles import get_gpu_profile, get_model_profile
from llmload.simulator.scheduler import Scheduler, SimRequest
from llmload.simulator.virtual import simulate_closed_loop


def make_perf(**kwargs) -> PerfModel:
    return PerfModel(gpu=get_gpu_profile("rtx3090"), model=get_model_profile("llama-3.1-8b"), **kwargs)


def req(rid: int, prompt: int = 40, n: int = 3) -> SimRequest:
    return SimRequest(rid=rid, prompt_tokens=prompt, n_target=n, finish_reason="length")


def test_prefill_emits_first_token_then_one_token_per_step():
    s = Scheduler(perf=make_perf())
    r = req(1, prompt=40, n=3)
    s.add(r)
    plan = s.plan()
    assert [(w[0].rid, w[1]) for w in plan.work] == [(1, 40)]
    assert plan.prefill_tokens == 40 and plan.num_decode == 0
    assert s.complete(plan, 1.0) == [r] and r.generated == 1 and r.scheduled_at == pytest.approx(1.0 - plan.duration_s)
    plan = s.plan()
    assert plan.num_decode == 1 and plan.prefill_tokens == 0
    assert plan.duration_s == pytest.approx(s.perf.step_s(num_decode=1, context_tokens=41))
    s.complete(plan, 2.0)
    s.complete(s.plan(), 3.0)
    assert r.generated == 3 and r.finished and not s.has_work()
    assert s.free_blocks == s.total_blocks and s.plan() is None


def test_long_prompt_is_chunked_by_the_token_budget():
    s = Scheduler(perf=make_perf(max_num_batched_tokens=100))
    r = req(1, prompt=250)
    s.add(r)
    chunks = []
    while r.generated == 0:
        plan = s.plan()
        chunks.append(plan.work[0][1])
        s.complete(plan, 0.0)
    assert chunks == [100, 100, 50]


def test_max_num_seqs_keeps_requests_waiting():
    s = Scheduler(perf=make_perf(max_num_seqs=2))
    for i in range(3):
        s.add(req(i))
    s.complete(s.plan(), 0.0)
    assert len(s.running) == 2 and len(s.waiting) == 1


def test_full_kv_cache_makes_requests_wait():
    s = Scheduler(perf=make_perf(kv_cache_tokens_override=160))  # 10 blocks
    for i in range(3):
        s.add(req(i, prompt=60, n=1))  # 4 blocks each
    plan = s.plan()
    assert len(plan.work) == 2 and len(s.waiting) == 1
    assert s.kv_cache_usage == pytest.approx(0.8)
    s.complete(plan, 0.0)  # both finish after one token and free their blocks
    assert len(s.plan().work) == 1


def test_preemption_recomputes_the_most_recent_request():
    s = Scheduler(perf=make_perf(kv_cache_tokens_override=64))  # 4 blocks
    a, b = req(1, prompt=32, n=10), req(2, prompt=32, n=10)
    s.add(a)
    s.add(b)
    s.complete(s.plan(), 0.0)  # both prefilled into 2 blocks each: cache full
    assert s.free_blocks == 0 and a.generated == b.generated == 1
    plan = s.plan()  # a needs a third block for token 33: b is preempted
    assert plan.preempted == 1 and list(s.waiting) == [b] and b.num_computed == 0
    assert [w[0] for w in plan.work] == [a]


def test_virtual_closed_loop_reproduces_the_study_within_15_percent():
    perf = make_perf()
    for users, rate, aggregate in ((1, 45.1, 45.0), (100, 13.9, 1359.0)):
        r = simulate_closed_loop(perf=perf, users=users, max_tokens=100)
        assert len(r.e2e_s) == 10 * users and set(r.output_tokens) == {100}
        assert r.stream_rate_mean_tps == pytest.approx(rate, rel=0.15)
        assert r.output_tps == pytest.approx(aggregate, rel=0.15)
