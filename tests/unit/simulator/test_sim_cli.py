"""The ``llmload sim`` options, and the simulator's import boundary."""

from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

import pytest

import llmload.simulator
from llmload.errors import ConfigError
from llmload.simulator import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    return parser.parse_args(["sim", *argv])


def test_defaults_and_func():
    args = parse()
    assert (args.profile, args.model_profile, args.served_model_name) == (
        "rtx3090",
        "llama-3.1-8b",
        "meta-llama/Llama-3.1-8B-Instruct",
    )
    assert (args.host, args.port, args.fault_rate, args.fault_after, args.stall_s) == ("127.0.0.1", 8000, 1.0, 5, 30.0)
    assert args.func is cli.run
    config = cli.config_from_args(args)
    assert config.perf_model().max_num_seqs == 256


def test_fault_and_fixed_options():
    config = cli.config_from_args(
        parse(
            "--profile",
            "fixed",
            "--ttft-ms",
            "40",
            "--itl-ms",
            "0",
            "--fault",
            "stall",
            "--fault-rate",
            "0.2",
            "--fault-after",
            "3",
            "--stall-s",
            "1",
            "--seed",
            "9",
            "--reject-stream-options",
        )
    )
    assert config.perf_model() is None and (config.ttft_ms, config.itl_ms, config.seed) == (40, 0, 9)
    assert (config.fault.kind, config.fault.rate, config.fault.after, config.fault.stall_s) == ("stall", 0.2, 3, 1)
    assert config.reject_stream_options
    with pytest.raises(SystemExit):
        parse("--fault", "explode")


@pytest.mark.parametrize(
    "argv", [("--profile", "tpu"), ("--fault-rate", "2"), ("--ttft-ms", "-1"), ("--gpu-memory-utilization", "0.5")]
)
def test_bad_options_are_config_errors(argv):
    with pytest.raises(ConfigError):
        cli.config_from_args(parse(*argv))


def test_list_profiles(capsys):
    assert cli.run(parse("--list-profiles")) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["profile"] for r in rows] == ["rtx3090", "a100-40gb", "h100-80gb", "fixed"]
    assert rows[0]["kv_cache_tokens"] < rows[1]["kv_cache_tokens"] < rows[2]["kv_cache_tokens"]


def test_simulator_never_imports_locust_or_gevent():
    for path in Path(llmload.simulator.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n.split(".")[0] in ("locust", "gevent", "geventhttpclient") for n in names), path.name
