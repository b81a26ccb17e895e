"""Picking the one log line that explains a failure."""

from __future__ import annotations

from pathlib import Path

from llmload.target.logtail import clean_line, last_meaningful_line, pick_reason


def test_clean_line_strips_colours_and_vllm_prefixes():
    line = "\x1b[1;36m(EngineCore_DP0 pid=4754)\x1b[0m ERROR 11-21 15:14:33 [core.py:708] ValueError: bad head size"
    assert clean_line(line) == "ValueError: bad head size"
    assert clean_line("(APIServer pid=1) INFO 11-21 15:14:17 [api_utils.py:347] hello") == "hello"
    assert clean_line("   plain  ") == "plain"


def test_the_root_cause_beats_the_generic_wrap_up():
    lines = [
        "(EngineCore pid=2) ERROR 11-21 15:00:01 [core.py:9] Traceback (most recent call last):",
        '(EngineCore pid=2) ERROR 11-21 15:00:01 [core.py:9]   File "/x/core.py", line 1, in <module>',
        "(EngineCore pid=2) ERROR 11-21 15:00:01 [core.py:9] ValueError: Head size 40 is not supported",
        "Traceback (most recent call last):",
        '  File "/x/api_server.py", line 5, in <module>',
        "RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
        "",
    ]
    assert pick_reason(lines) == "ValueError: Head size 40 is not supported"


def test_pydantic_errors_keep_their_detail_line():
    lines = [
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig",
        "  Value error, User-specified max_model_len (100000) is greater than the derived max_model_len",
        "    For further information visit https://errors.pydantic.dev/2.14/v/value_error",
    ]
    assert pick_reason(lines) == (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig "
        "Value error, User-specified max_model_len (100000) is greater than the derived max_model_len"
    )


def test_argparse_usage_errors():
    lines = ["usage: api_server.py [-h] ...", "api_server.py: error: argument --port: invalid int value: 'x'"]
    assert pick_reason(lines) == "api_server.py: error: argument --port: invalid int value: 'x'"


def test_shutdown_noise_is_skipped():
    lines = [
        "INFO:     Application shutdown complete.",
        "nanobind: leaked 4 instances!",
        ' - leaked instance 0x7f62b3a70b68 of type "triton._C.libtriton.ir.attribute"',
        " - ... skipped remainder",
        "/usr/lib/python3.11/multiprocessing/resource_tracker.py:254: UserWarning: resource_tracker: There appear "
        "to be 1 leaked semaphore objects to clean up at shutdown",
        "  warnings.warn('resource_tracker: There appear to be %d '",
    ]
    assert pick_reason(lines) == "INFO:     Application shutdown complete."


def test_empty_and_long_logs():
    assert pick_reason([]) == ""
    assert pick_reason(["", "  "]) == ""
    reason = pick_reason(["ValueError: " + "x" * 1000])
    assert len(reason) == 400
    assert reason.endswith("...")


def test_last_meaningful_line_reads_the_tail_and_pip_progress(tmp_path: Path):
    log = tmp_path / "install.log"
    log.write_bytes(b"noise\n" * 100_000 + b"Downloading 10%\rDownloading 100%\rERROR: disk full\n")
    assert last_meaningful_line(log) == "ERROR: disk full"
    assert last_meaningful_line(tmp_path / "missing.log") == ""
