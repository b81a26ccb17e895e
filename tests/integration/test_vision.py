"""Vision chat against the simulator, with real Locust processes: images counted, prompt tokens exact.

The simulator counts an image as one prompt token per 28x28-pixel patch and, with
``--vision-encode-ms``, adds the encoder's time per image to TTFT; its ``vllm:prompt_tokens``
counter is the truth for the client's prompt tokens (usage).
"""

from __future__ import annotations

import subprocess

import pytest

from llmload.simulator.process import SimulatorProcess
from tests.support.processes import env, locust_command, run_locust, scrape

pytestmark = pytest.mark.integration

RUN = ["-u", "3", "-r", "3", "-t", "4s", "--stop-timeout", "10", "--llm-think-time", "0", "--llm-max-tokens", "10"]


def test_images_are_counted_and_prompt_tokens_match_the_server(tmp_path):
    sim_args = ["--ttft-ms", "20", "--itl-ms", "2", "--vision-encode-ms", "30"]
    with SimulatorProcess(profile="fixed", extra_args=sim_args) as sim:
        before = scrape(sim.base_url)
        run = run_locust(
            tmp_path, "vision_chat.py", sim.base_url, *RUN, "--llm-images", "2", "--llm-image-size", "280x140"
        )
        after = scrape(sim.base_url)
    assert run.returncode == 0, run.output[-3000:]
    total = run.results["total"]
    ok = total["requests"]["ok"]
    assert ok > 20 and total["requests"]["failed"] == 0
    assert total["images"] == {
        "requests": ok,
        "images": 2 * ok,
        "pixels": 2 * ok * 280 * 140,
        "images_per_request": 2.0,
        "pixels_per_image": 280 * 140,
    }
    assert total["tokens"]["prompt"] == after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"]
    # Each request: 2 images of 10 x 5 patches = 100 image tokens, over the text's prompt tokens.
    assert total["tokens"]["prompt"] / ok >= 100 + 31
    assert total["ttft_s"]["p50"] == pytest.approx(0.020 + 2 * 0.030, abs=0.004)  # two images encoded


def test_bad_image_options_are_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in (
        (["--llm-image-size", "512"], "expected WxH"),
        (["--llm-image-dir", str(empty)], "no images"),
        (["--llm-image-dir", str(tmp_path / "missing")], "cannot read"),
        (["--llm-images", "x"], "--llm-images"),
    ):
        cmd = locust_command("vision_chat.py", "http://127.0.0.1:9", "--headless", "-t", "1s", *args)
        done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60, env=env())
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert message in done.stderr and "Traceback" not in done.stderr + done.stdout, done.stderr[-2000:]
