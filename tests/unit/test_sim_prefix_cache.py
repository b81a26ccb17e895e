"""The simulator's prefix cache: token sequences, chained block hashes, LRU, metrics, prefill, --tokenizer."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmload.simulator import cli
from llmload.simulator.openai_api import parse_request
from llmload.simulator.perfmodel import PerfModel
from llmload.simulator.prefix_cache import FIXED_PROFILE_CACHE_TOKENS, PrefixCache
from llmload.simulator.profiles import get_gpu_profile, get_model_profile
from llmload.simulator.scheduler import Scheduler, SimRequest
from llmload.simulator.server import SimApp, SimConfig
from llmload.simulator.tokens import (
    BOS,
    TokenizerError,
    chat_token_sequence,
    count_chat_tokens,
    count_prompt_tokens,
    load_tokenizer,
    prompt_token_sequence,
)
from llmload.simulator.vllm_metrics import SimMetrics

WORDS = [f"w{i}" for i in range(4000)]
SHARED = " ".join(WORDS[:512])


def completion(prompt: str, *, tokenizer=None, max_tokens: int = 4):
    body = orjson.dumps({"prompt": prompt, "max_tokens": max_tokens})
    return parse_request(
        chat=False,
        body=body,
        served_model="m",
        max_model_len=131072,
        default_max_tokens=16,
        reject_stream_options=False,
        tokenizer=tokenizer,
        sequence=True,
    )


def chat(messages, *, tokenizer=None):
    body = orjson.dumps({"messages": messages, "max_tokens": 4})
    return parse_request(
        chat=True,
        body=body,
        served_model="m",
        max_model_len=131072,
        default_max_tokens=16,
        reject_stream_options=False,
        tokenizer=tokenizer,
        sequence=True,
    )


def sim_request(rid: int, gen, cache: PrefixCache, n: int = 3) -> SimRequest:
    r = SimRequest(rid=rid, prompt_tokens=gen.prompt_tokens, n_target=n, finish_reason="length")
    r.block_hashes = cache.block_hashes(gen.prompt_ids, seed="m")
    return r


def perf(**kwargs) -> PerfModel:
    return PerfModel(gpu=get_gpu_profile("rtx3090"), model=get_model_profile("llama-3.1-8b"), **kwargs)


# -- token sequences --------------------------------------------------------------------


def png_data_url(width: int, height: int, color: int) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (color, 0, 0)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_sequences_follow_the_counting_rule():
    prompt = "What's 2+2? Tell me."
    seq = prompt_token_sequence(prompt)
    assert seq[0] == BOS and seq[1:] == ["What", "'", "s", "2", "+", "2", "?", "Tell", "me", "."]
    assert len(seq) == count_prompt_tokens(prompt)
    assert prompt_token_sequence([[5, 6, 7]]) == [5, 6, 7]
    image = {"type": "image_url", "image_url": {"url": png_data_url(60, 30, 1)}}
    messages = [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": [{"type": "text", "text": "Describe"}, image]},
        {"role": "assistant", "content": None},
    ]
    seq = chat_token_sequence(messages)
    assert len(seq) == count_chat_tokens(messages) == 26 + 3 * 5 + 4 + 1 + 3 * 2
    images = [t for t in seq if str(t).startswith("<|image:")]
    assert len(images) == 6 and len(set(images)) == 1  # 3x2 patches of one marker from the data
    other = {"type": "image_url", "image_url": {"url": png_data_url(60, 30, 2)}}
    assert chat_token_sequence([{"role": "user", "content": [other]}]) != chat_token_sequence(
        [{"role": "user", "content": [image]}]
    )


def test_a_conversation_turn_extends_the_previous_prompt():
    turn1 = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    turn2 = [*turn1, {"role": "assistant", "content": "Hello you"}, {"role": "user", "content": "Bye"}]
    first, second = chat_token_sequence(turn1), chat_token_sequence(turn2)
    assert second[: len(first)] == first  # the generation prompt opens the assistant message's header
    assert chat_token_sequence([{"role": "user", "content": "x"}]) != chat_token_sequence(
        [{"role": "system", "content": "x"}]
    )


# -- block hashing and the cache ----------------------------------------------------------


def test_shared_512_words_hit_512_tokens():
    cache = PrefixCache(capacity_blocks=10_000, block_size=16)
    a = completion(SHARED + " alpha beta gamma")
    b = completion(SHARED + " delta epsilon")
    assert a.prompt_tokens == 1 + 512 + 3 and a.prompt_ids[:513] == b.prompt_ids[:513]
    ra, rb = sim_request(1, a, cache), sim_request(2, b, cache)
    assert len(ra.block_hashes) == (1 + 512 + 3) // 16 == 32
    assert cache.lookup(ra) == 0
    assert cache.lookup(rb) == 512  # BOS + 512 words = 513 shared tokens: 32 full blocks
    assert (cache.queries, cache.hits) == (a.prompt_tokens + b.prompt_tokens, 512)
    # hashes are chained: the same block after a different prefix is another block
    c = completion("zzz " + SHARED)
    assert not set(cache.block_hashes(c.prompt_ids, seed="m")) & set(ra.block_hashes)
    # and keyed by model (LoRA adapters share nothing)
    assert cache.block_hashes(a.prompt_ids, seed="lora1") != ra.block_hashes


def test_a_fully_cached_prompt_still_computes_its_last_token():
    cache = PrefixCache(capacity_blocks=10_000, block_size=16)
    exact = completion(" ".join(WORDS[:511]))  # BOS + 511 words = 512 tokens = 32 blocks
    assert exact.prompt_tokens == 512
    cache.lookup(sim_request(1, exact, cache))
    assert cache.lookup(sim_request(2, exact, cache)) == 496  # (512 - 1) // 16 blocks
    longer = completion(" ".join(WORDS[:512]))  # 513 tokens: 32 full blocks + 1
    cache.lookup(sim_request(3, longer, cache))
    assert cache.lookup(sim_request(4, longer, cache)) == 512
    short = completion("only five words here ok")  # 6 tokens, no full block: queried, never a hit
    r = sim_request(5, short, cache)
    assert r.block_hashes == [] and cache.lookup(r) == 0


def test_lru_eviction_drops_tails_first_and_touch_keeps_blocks():
    cache = PrefixCache(capacity_blocks=4, block_size=16)
    a = completion(" ".join(WORDS[:47]))  # 48 tokens: 3 blocks
    b = completion(" ".join(WORDS[100:147]))
    ra, rb = sim_request(1, a, cache), sim_request(2, b, cache)
    cache.lookup(ra)
    cache.lookup(rb)
    assert len(cache) == 4
    assert rb.block_hashes[0] in cache and rb.block_hashes[2] in cache
    assert ra.block_hashes[0] in cache and ra.block_hashes[1] not in cache and ra.block_hashes[2] not in cache
    assert cache.match(ra.block_hashes, 48) == 16  # only A's head block is left
    assert cache.match(rb.block_hashes, 48) == 32  # (48 - 1) // 16 blocks at most
    cache.lookup(sim_request(3, a, cache))  # A again: its 3 blocks become the most recent
    assert all(h in cache for h in ra.block_hashes)
    assert rb.block_hashes[0] in cache and rb.block_hashes[1] not in cache


def test_hashing_a_2k_token_prompt_is_cheap():
    cache = PrefixCache(capacity_blocks=1_000_000, block_size=16)
    tokens = prompt_token_sequence(" ".join(WORDS[:2047]))
    assert len(tokens) == 2048
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        cache.block_hashes(tokens, seed="m")
    per_request = (time.perf_counter() - start) / n
    assert per_request < 0.002, per_request


# -- metrics ----------------------------------------------------------------------------------


def samples(metrics: SimMetrics) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(metrics.render().decode()):
        for s in fam.samples:
            out[s.name + "{" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())) + "}"] = s.value
    return out


def test_metrics_render_queries_and_hits():
    lab = "{engine=0,model_name=m}"
    m = SimMetrics(model_name="m", max_model_len=4096)
    s = samples(m)
    assert s["vllm:prefix_cache_queries_total" + lab] == 0 and s["vllm:prefix_cache_hits_total" + lab] == 0
    cache = PrefixCache(capacity_blocks=10_000, block_size=16)
    m.prefix_cache = cache
    a, b = completion(SHARED + " a"), completion(SHARED + " b")
    cache.lookup(sim_request(1, a, cache))
    cache.lookup(sim_request(2, b, cache))
    s = samples(m)
    assert s["vllm:prefix_cache_queries_total" + lab] == 2 * 514
    assert s["vllm:prefix_cache_hits_total" + lab] == 512
    text = m.render().decode()
    assert 'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 512.0' in text


# -- the scheduler: cached tokens skip prefill ---------------------------------------------------------


def test_perf_profile_prefill_skips_cached_tokens():
    p = perf()
    cache = PrefixCache(capacity_blocks=p.num_kv_blocks, block_size=p.block_size)
    s = Scheduler(perf=p, prefix_cache=cache)
    a, b = completion(SHARED + " alpha beta gamma"), completion(SHARED + " delta epsilon")
    ra, rb = sim_request(1, a, cache, n=1), sim_request(2, b, cache, n=1)
    s.add(ra)
    plan = s.plan()
    assert [(r.rid, n) for r, n in plan.work] == [(1, 516)] and plan.prefill_tokens == 516
    full = plan.duration_s
    s.complete(plan, 1.0)
    assert ra.finished and s.free_blocks == s.total_blocks
    s.add(rb)
    plan = s.plan()
    assert [(r.rid, n) for r, n in plan.work] == [(2, 515 - 512)] and plan.prefill_tokens == 3
    assert rb.num_computed == 512 and rb.blocks == -(-515 // 16)  # its blocks are all reserved
    expected = p.step_s(num_decode=0, context_tokens=0, prefill_flops=p.prefill_flops(3, 512))
    assert plan.duration_s == pytest.approx(expected) and plan.duration_s < full / 5
    assert 0 < s.kv_cache_usage <= 1
    s.complete(plan, 2.0)
    assert rb.finished and rb.generated == 1 and s.free_blocks == s.total_blocks
    assert (cache.queries, cache.hits) == (516 + 515, 512)


def test_preempted_request_reuses_its_prefix_and_is_counted_once():
    p = perf(kv_cache_tokens_override=16 * 40, max_num_seqs=8)  # 40 blocks
    cache = PrefixCache(capacity_blocks=p.num_kv_blocks, block_size=16)
    s = Scheduler(perf=p, prefix_cache=cache)
    r1 = sim_request(1, completion(" ".join(WORDS[:319])), cache, n=100)  # 320 tokens: 20 blocks
    r2 = sim_request(2, completion(" ".join(WORDS[1000:1299])), cache, n=100)  # 300 tokens: 19 blocks
    s.add(r1)
    s.add(r2)
    preempted, readmitted = False, None
    t = 0.0
    while s.has_work():
        was_waiting = r2 in s.waiting
        plan = s.plan()
        assert plan is not None
        preempted = preempted or plan.preempted > 0
        if preempted and was_waiting and r2 in s.running and readmitted is None:
            readmitted = (r2.num_computed, dict(plan.work)[r2], r2.num_tokens)
        t += 1.0
        s.complete(plan, t)
    assert preempted and readmitted is not None
    computed, work, num_tokens = readmitted
    assert computed == 288 and work == num_tokens - 288  # its 18 full prompt blocks were still cached
    assert (cache.queries, cache.hits) == (620, 0)  # counted at first scheduling only
    assert r1.generated == r2.generated == 100 and s.free_blocks == s.total_blocks


def test_pooled_and_uncached_requests_stay_out():
    p = perf()
    cache = PrefixCache(capacity_blocks=p.num_kv_blocks)
    s = Scheduler(perf=p, prefix_cache=cache)
    r = SimRequest(rid=1, prompt_tokens=100, n_target=1, finish_reason="stop")
    r.pooled = True
    s.add(r)
    plan = s.plan()
    assert plan.work == [(r, 100)]
    assert (cache.queries, cache.hits, len(cache)) == (0, 0, 0)


# -- configuration ----------------------------------------------------------------------------------


def parse(*argv: str):
    import argparse

    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["sim", *argv])


def test_options_and_capacity():
    config = cli.config_from_args(parse())
    assert config.enable_prefix_caching and config.block_size == 16 and config.tokenizer is None
    cache = config.prefix_cache()
    assert cache is not None and cache.capacity == config.perf_model().num_kv_blocks
    assert cli.config_from_args(parse("--no-enable-prefix-caching")).prefix_cache() is None
    fixed = cli.config_from_args(parse("--profile", "fixed")).prefix_cache()
    assert fixed is not None and fixed.capacity == FIXED_PROFILE_CACHE_TOKENS // 16
    small = cli.config_from_args(parse("--profile", "fixed", "--kv-cache-tokens", "3200", "--block-size", "32"))
    assert small.prefix_cache().capacity == 100 and small.prefix_cache().block_size == 32
    assert cli.config_from_args(parse("--block-size", "32")).perf_model().block_size == 32
    with pytest.raises(Exception, match="block-size"):
        cli.config_from_args(parse("--block-size", "0"))


def test_bad_tokenizer_path_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("not a tokenizer")
    env = {**os.environ, "LOCUST_SKIP_MONKEY_PATCH": "1"}
    for path in ("/nonexistent", str(bad)):
        proc = subprocess.run(
            [sys.executable, "-m", "llmload.cli", "sim", "--tokenizer", path, "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("llmload sim: error: --tokenizer " + path), proc.stderr
        assert proc.stdout == ""
    with pytest.raises(TokenizerError):
        cli.config_from_args(parse("--tokenizer", str(tmp_path)))  # a folder without tokenizer.json


# -- a Hugging Face tokenizer ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_tokenizer_dir(tmp_path_factory) -> Path:
    import random

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    rng = random.Random(7)
    corpus = [
        " ".join(rng.choice(WORDS[:300]) + rng.choice(["", "s", "ing", "."]) for _ in range(30)) for _ in range(300)
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    folder = tmp_path_factory.mktemp("tok")
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_hf_tokenizer_counts_and_sequences(hf_tokenizer_dir):
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(hf_tokenizer_dir / "tokenizer.json"))
    tok = load_tokenizer(str(hf_tokenizer_dir))
    assert load_tokenizer(str(hf_tokenizer_dir / "tokenizer.json")).path == tok.path
    bos = ref.token_to_id("<s>")
    for text in ("w1 w2 w3ing w4.", SHARED, "Zebra 123 ünïcode!"):
        gen = completion(text, tokenizer=tok)
        ids = ref.encode(text, add_special_tokens=True).ids
        assert gen.prompt_tokens == len(ids) and gen.prompt_ids == ids and ids[0] == bos
    messages = [{"role": "system", "content": "w5 w6s"}, {"role": "user", "content": SHARED}]
    gen = chat(messages, tokenizer=tok)
    expected = 26 + sum(5 + len(ref.encode(m["content"], add_special_tokens=False).ids) for m in messages)
    assert gen.prompt_tokens == expected == len(gen.prompt_ids)
    # prefix sharing works on ids
    cache = PrefixCache(capacity_blocks=10_000, block_size=16)
    a, b = completion(SHARED + " w7", tokenizer=tok), completion(SHARED + " w8 w9", tokenizer=tok)
    shared = next(i for i, (x, y) in enumerate(zip(a.prompt_ids, b.prompt_ids, strict=False)) if x != y)
    cache.lookup(sim_request(1, a, cache))
    assert cache.lookup(sim_request(2, b, cache)) == shared // 16 * 16 > 0


# -- the whole app: completions, pooling, /metrics ----------------------------------------------


async def _http(port: int, method: str, path: str, body: dict | None = None) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = orjson.dumps(body) if body is not None else b""
    writer.write(
        f"{method} {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\n"
        f"content-length: {len(data)}\r\n\r\n".encode()
        + data
    )
    out = await reader.read()
    writer.close()
    return out


def test_app_counts_generation_requests_only():
    async def main() -> bytes:
        loop = asyncio.get_running_loop()
        app = SimApp(config=SimConfig(profile="fixed", served_model_name="m"), loop=loop)
        server = await loop.create_server(app.protocol, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            for tail in ("one", "two"):
                reply = await _http(port, "POST", "/v1/completions", {"prompt": SHARED + " " + tail, "max_tokens": 2})
                assert b" 200 " in reply.split(b"\r\n")[0] and b'"prompt_tokens":514' in reply
            reply = await _http(port, "POST", "/v1/embeddings", {"input": SHARED})
            assert b" 200 " in reply.split(b"\r\n")[0]
            return await _http(port, "GET", "/metrics")
        finally:
            server.close()
            app.close()

    text = asyncio.run(main()).decode()
    assert 'vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1028.0' in text
    assert 'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 512.0' in text
