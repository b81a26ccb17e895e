"""Vision chat against a real vLLM: a tiny random-weight vision-language model built here.

``tests/support/build_vlm.py`` builds an Idefics3 (SmolVLM-style) model with a 2-layer vision
tower, its image processor and a locally trained tokenizer, with no download (Qwen2-VL and
LLaVA cannot run on the CPU build here: their processors or vLLM modules need torchvision,
which the CPU venv does not have). vLLM resizes each image so its longest edge is 112 px and
charges 6 x rows x columns + rows + 8 prompt tokens per image (34 for a square one). The run's
prompt and output tokens must equal the deltas of vLLM's own counters.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.processes import run_locust, scrape
from tests.support.vllm import running_vllm

pytestmark = [pytest.mark.integration, pytest.mark.vllm, pytest.mark.slow]

BUILD_VLM = Path(__file__).resolve().parents[1] / "support" / "build_vlm.py"
RUN = ["-u", "2", "-r", "2", "-t", "5s", "--stop-timeout", "30", "--llm-think-time", "0"]


@pytest.fixture(scope="module")
def vllm(tmp_path_factory):
    from llmload.target.process import VLLMProcess

    model = tmp_path_factory.mktemp("vlm") / "tiny-vlm"

    def make() -> VLLMProcess:
        base = VLLMProcess(shape="tiny")
        base.prepare()  # the venv (cached)
        assert base.vllm is not None
        subprocess.run([str(base.vllm.python), str(BUILD_VLM), str(model), "1"], check=True, timeout=180)
        return VLLMProcess(
            shape="tiny",
            model_path=model,
            served_model_name="tiny-vlm",
            extra_args=["--limit-mm-per-prompt", '{"image": 2}'],
        )

    with running_vllm(make) as server:
        yield server


def test_images_to_a_real_vlm_count_prompt_tokens_exactly(vllm, tmp_path):
    before = scrape(vllm.base_url)
    run = run_locust(
        tmp_path,
        "vision_chat.py",
        vllm.base_url,
        *RUN,
        *("--llm-images", "1-2", "--llm-image-size", "112x112,224x112", "--llm-max-tokens", "16", "--llm-ignore-eos"),
        timeout=180,
    )
    after = scrape(vllm.base_url)
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    ok = total["requests"]["ok"]
    assert ok >= 4 and total["requests"]["failed"] == 0, total["requests"]
    assert total["tokens"]["prompt"] == after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    assert total["tokens"]["output"] == after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"]
    assert total["tokens"]["output"] == 16 * ok and total["tokens"]["output_source"] == "usage"
    images = total["images"]
    assert images["requests"] == ok and ok <= images["images"] <= 2 * ok
    # Every image costs at least 21 prompt tokens (a 2:1 one), a square one 34.
    assert total["tokens"]["prompt"] >= 21 * images["images"]
    assert total["ttft_s"]["count"] == ok
