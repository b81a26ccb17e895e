"""llmload's Locust command-line options and their validated form.

Options are Locust custom arguments, so they work on the command line, in
``locust.conf`` / ``--config``, in ``[tool.locust]``, as ``LOCUST_LLM_*``
environment variables and in the web UI's start form. The web form hands
values back as strings, so every value is parsed here, once, by
``LLMOptions.from_parsed``; a bad value raises ``ConfigError`` naming the
option and the accepted form.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llmload.errors import ConfigError
from llmload.weights import parse_named_weights

API_KEY_ENV = "LLMLOAD_API_KEY"
ENDPOINTS = ("chat", "completions")
ARRIVALS = ("closed", "poisson", "constant", "gamma", "trace")
TIMESTAMPS = ("kernel", "user")
TTFT_OF = ("any", "answer")
"""What the TTFT SLO targets: the first token of any kind, or the first answer token (reasoning models)."""
DEFAULT_SLO_STREAM_RATE_TPS = 10.0
DEFAULT_STREAM_TIMEOUT_S = 60.0
DEFAULT_SLO_OBJECTIVE = 0.99


def add_arguments(parser: Any) -> None:
    """Register the ``--llm-*`` options on Locust's argument parser (also as ``LOCUST_LLM_*`` env vars)."""

    def add(flag: str, **kwargs: Any) -> None:
        env_var = "LOCUST_" + flag.lstrip("-").upper().replace("-", "_")
        parser.add_argument(flag, env_var=env_var, **kwargs)

    add("--llm-model", default="", help="Model name to request (default: the first model of GET /v1/models)")
    add(
        "--llm-endpoint",
        default="",
        help="chat = /v1/chat/completions, completions = /v1/completions (default: the user class's)",
    )
    add("--llm-max-tokens", default="", help="max_tokens per request, N or A-B (default: the user class's)")
    add(
        "--llm-prompt-tokens",
        default="",
        help="Approximate prompt length in tokens, N or A-B (default: the user class's)",
    )
    add(
        "--llm-ignore-eos",
        default=False,
        action="store_true",
        help="Send ignore_eos=true so answers run to max_tokens (vLLM)",
    )
    add(
        "--llm-think-time",
        default="",
        help="Seconds between a user's requests, N or A-B; 0 = closed loop (default: the user class's)",
    )
    add(
        "--llm-api-key",
        default="",
        is_secret=True,
        help=f"API key sent as a Bearer token (default: ${API_KEY_ENV}); never logged or reported",
    )
    add("--llm-slo-ttft", default="", help="SLO: time to first token in seconds (default: none)")
    add(
        "--llm-slo-ttft-of",
        default="",
        choices=["", *TTFT_OF],
        help="What the TTFT SLO targets: any (first token, thinking included) or answer (first answer token; "
        "default for reasoning user classes, else any)",
    )
    add(
        "--llm-slo-stream-rate",
        default=str(DEFAULT_SLO_STREAM_RATE_TPS),
        help="SLO: per-request stream rate in tokens/s",
    )
    add(
        "--llm-slo-objective",
        default=str(DEFAULT_SLO_OBJECTIVE),
        help="SLO objective: the share of finished requests that must meet the SLOs (alerts, soak breaches)",
    )
    add(
        "--llm-stream-timeout",
        default=str(DEFAULT_STREAM_TIMEOUT_S),
        help="Seconds of silence (connect, first byte, between events) before a request fails as timeout",
    )
    add(
        "--llm-timestamps",
        default="kernel",
        help="kernel: event times from the kernel's receive stamps (Linux, http://; else user) or user: when read",
    )
    add("--llm-results", default="", help="Write the results JSON to this path at the end of the run")
    add("--llm-seed", default="0", help="Seed of the synthetic prompt generator and of open-loop arrivals")
    # Workload shape (docs/scenarios.md).
    add(
        "--llm-input-tokens",
        default="",
        help="Prompt length distribution: N, A-B, or e.g. lognormal:mean=200,sigma=0.5,min=10,max=1024",
    )
    add("--llm-output-tokens", default="", help="max_tokens distribution, same syntax as --llm-input-tokens")
    add("--llm-dataset", default="", help="Prompts from a local ShareGPT JSON or JSONL file")
    add("--llm-dataset-format", default="auto", help="auto, sharegpt or jsonl")
    add("--llm-dataset-input-tokens", default="", help="Keep dataset entries whose prompt has A-B tokens (estimated)")
    add(
        "--llm-dataset-output-tokens",
        default="",
        help="Keep dataset entries whose reference answer has A-B tokens (estimated)",
    )
    add(
        "--llm-shared-prefix-tokens",
        default="0",
        help="Prepend the same N-token text to every prompt (prefix-cache workloads)",
    )
    add(
        "--llm-turns",
        default="",
        help="Multi-turn sessions: turns per session, N, A-B or a distribution (default: the user class's)",
    )
    add(
        "--llm-arrival",
        default="closed",
        help="closed (users with think time); open loop: poisson, constant or gamma at --llm-rate "
        "(or --llm-rate-profile); trace (--llm-trace)",
    )
    add("--llm-rate", default="", help="Open loop: requests/s for the whole test, divided among workers")
    add(
        "--llm-burstiness",
        default="",
        help="gamma arrivals: shape of the gaps, 1 = Poisson, < 1 burstier, > 1 more regular (vLLM's --burstiness)",
    )
    add(
        "--llm-rate-profile",
        default="",
        help="Open loop: the rate over time instead of --llm-rate: step:0=2,10m=5,... or ramp:0=1,30m=10,...",
    )
    add("--llm-trace", default="", help="Replay a trace file's requests at their recorded times (docs/scenarios.md)")
    add("--llm-trace-format", default="auto", help="Trace format: auto, mooncake, azure, burstgpt or llmload")
    add("--llm-trace-speed", default="1", help="Trace replay: time runs this many times faster (10 = 10x)")
    add("--llm-trace-start", default="0", help="Trace replay: skip this much of the trace's time first (e.g. 10m)")
    add("--llm-trace-duration", default="", help="Trace replay: replay this much of the trace's time only")
    add("--llm-trace-max-requests", default="", help="Trace replay: send at most this many requests")
    add("--llm-block-tokens", default="512", help="Trace replay: tokens per hash_ids block (Mooncake: 512)")
    add(
        "--llm-tokenizer",
        default="",
        help="Local tokenizer.json (or its folder) for prompts exact in tokens; never downloaded",
    )
    add("--llm-backends", default="", help="TOML file of backends to spread users over (docs/scenarios.md)")
    add("--llm-backend", default="", help="Use only these backends (comma-separated names) of --llm-backends")
    add("--llm-tools", default="", help="JSON file of OpenAI tool definitions every chat request sends (tools)")
    add(
        "--llm-tool-choice",
        default="",
        help="tool_choice with --llm-tools: auto (default), required, none, or a tool's name",
    )
    add(
        "--llm-tool-latency",
        default="",
        help="Agent users: seconds a tool takes before its result goes back, N or A-B (default: the class's)",
    )
    add(
        "--llm-response-format",
        default="",
        help="JSON schema file: every chat request asks for a JSON answer valid against it (response_format)",
    )
    add("--llm-images", default="", help="Images per chat request: N, A-B or a distribution (default: the class's)")
    add("--llm-image-size", default="", help="Generated image resolution WxH, or a list WxH,WxH drawn per image")
    add("--llm-image-format", default="", help="Generated image encoding: jpeg (default), png or webp")
    add("--llm-image-dir", default="", help="Folder of images (.jpg, .png, .webp) to send instead of generated ones")
    add(
        "--llm-batch-size",
        default="",
        help="Embeddings: texts per request; score and rerank: documents per request: N, A-B or a distribution",
    )
    add(
        "--llm-lora",
        default="",
        help="Spread requests over LoRA adapters: name=weight,... (the request's model; weight 1 if omitted)",
    )


@dataclass(frozen=True, slots=True)
class Range:
    """A number or an inclusive range ``A-B`` drawn uniformly."""

    low: float
    high: float

    def draw(self, rng: Any) -> float:
        return self.low if self.low == self.high else rng.uniform(self.low, self.high)

    def draw_int(self, rng: Any) -> int:
        return int(self.low) if self.low == self.high else rng.randint(int(self.low), int(self.high))


def parse_range(value: Any, *, option: str, minimum: float = 0.0, integer: bool = False) -> Range | None:
    """Parse ``N`` or ``A-B`` (or a number); empty means not set."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low = high = float(value)
    else:
        text = str(value).strip()
        low_text, sep, high_text = text.partition("-") if not text.startswith("-") else (text, "", "")
        try:
            low = float(low_text)
            high = float(high_text) if sep else low
        except ValueError:
            raise ConfigError(f"--{option}: expected a number or a range A-B, got {value!r}") from None
    if integer and (low != int(low) or high != int(high)):
        raise ConfigError(f"--{option}: expected whole numbers, got {value!r}")
    if low < minimum or high < low:
        raise ConfigError(f"--{option}: expected {minimum:g} <= A <= B, got {value!r}")
    return Range(low, high)


def parse_number(
    value: Any,
    *,
    option: str,
    default: float | None = None,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    expected: str = "",
) -> float | None:
    """Parse the number of option ``option`` (named with its dashes); empty means ``default``.

    A value that is not a number, below ``low`` (or equal to it when ``low_open``) or above
    ``high`` raises a one-line ``ConfigError``: ``--option: expected <expected>, got 'value'``,
    where ``expected`` defaults to the bounds in words.
    """
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not ((number > low if low_open else number >= low) and number <= high):
        if not expected:
            bounds = []
            if low != -math.inf:
                bounds.append(f"{'>' if low_open else '>='} {low:g}")
            if high != math.inf:
                bounds.append(f"<= {high:g}")
            expected = "a number" + (" " + " and ".join(bounds) if bounds else "")
        raise ConfigError(f"{option}: expected {expected}, got {value!r}")
    return number


def parse_float(value: Any, *, option: str, minimum: float = 0.0, exclusive: bool = False) -> float | None:
    """Parse a number of ``--option``; empty means not set."""
    return parse_number(value, option=f"--{option}", low=minimum, low_open=exclusive)


def _image_options(get: Any) -> dict[str, Any]:
    """Validate the image options (a folder is read once per process)."""
    from llmload import datasets, images

    out = {
        name: str(get(f"llm_{name}") or "").strip() for name in ("images", "image_size", "image_format", "image_dir")
    }
    if out["images"]:
        datasets.parse_distribution(out["images"], option="llm-images")
    images.source_from(sizes=out["image_size"], fmt=out["image_format"], folder=out["image_dir"], seed=0)
    return out


def _batch_size_option(get: Any) -> str:
    from llmload import pooling

    spec = str(get("llm_batch_size") or "").strip()
    if spec:
        pooling.batch_distribution(spec)
    return spec


def _structured_options(get: Any) -> dict[str, Any]:
    """Validate the tools, tool choice and schema options (their files are read once per process)."""
    from llmload import structured

    out: dict[str, Any] = {
        "tools": str(get("llm_tools") or "").strip(),
        "tool_choice": str(get("llm_tool_choice") or "").strip(),
        "response_format": str(get("llm_response_format") or "").strip(),
    }
    structured.ask_from(tools_path=out["tools"], tool_choice=out["tool_choice"], schema_path=out["response_format"])
    out["tool_latency"] = parse_range(get("llm_tool_latency"), option="llm-tool-latency")
    return out


def _workload_options(get: Any) -> dict[str, Any]:
    """Validate the workload options; dataset and backends files are loaded (once per process) here."""
    from llmload import backends, datasets

    out: dict[str, Any] = {}
    for name in ("input_tokens", "output_tokens", "turns"):
        spec = str(get(f"llm_{name}") or "").strip()
        if spec:
            datasets.parse_distribution(spec, option=f"llm-{name.replace('_', '-')}")
        out[name] = spec
    for name in ("dataset_input_tokens", "dataset_output_tokens"):
        out[name] = parse_range(get(f"llm_{name}"), option=f"llm-{name.replace('_', '-')}", integer=True)
    out["dataset_format"] = str(get("llm_dataset_format") or "auto").strip().lower()
    out["dataset"] = str(get("llm_dataset") or "").strip()
    if out["dataset"]:
        tokenizer = str(get("llm_tokenizer") or "").strip()
        datasets.load_dataset(out["dataset"], **{**datasets_filters(out), "tokenizer": tokenizer})
    elif out["dataset_format"] not in datasets.DATASET_FORMATS:
        choices = ", ".join(datasets.DATASET_FORMATS)
        raise ConfigError(f"--llm-dataset-format: expected one of {choices}, got {out['dataset_format']!r}")
    prefix = str(get("llm_shared_prefix_tokens", "0") or "0").strip()
    if not prefix.isdigit():
        raise ConfigError(f"--llm-shared-prefix-tokens: expected a whole number >= 0, got {prefix!r}")
    out["shared_prefix_tokens"] = int(prefix)
    arrival = str(get("llm_arrival", "closed") or "closed").strip().lower()
    if arrival not in ARRIVALS:
        raise ConfigError(f"--llm-arrival: expected one of {', '.join(ARRIVALS)}, got {arrival!r}")
    from llmload import schedule

    out.update(schedule.schedule_options(get, arrival))
    out["backends"] = str(get("llm_backends") or "").strip()
    out["backend_names"] = str(get("llm_backend") or "").strip()
    if out["backends"]:
        backends.load_backends(out["backends"], only=out["backend_names"])
    elif out["backend_names"]:
        raise ConfigError("--llm-backend: only with --llm-backends FILE")
    return out


def datasets_filters(options: Any) -> dict[str, Any]:
    """The keyword arguments of ``datasets.load_dataset`` for validated options (or their dict)."""
    get = options.get if isinstance(options, dict) else lambda name: getattr(options, name, None)  # noqa: E731
    bounds = lambda r: None if r is None else (int(r.low), int(r.high))  # noqa: E731
    return {
        "format": get("dataset_format"),
        "input_tokens": bounds(get("dataset_input_tokens")),
        "output_tokens": bounds(get("dataset_output_tokens")),
        "tokenizer": get("tokenizer") or "",
    }


def _parse_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _objective(value: Any) -> float:
    objective = parse_number(
        value,
        option="--llm-slo-objective",
        default=DEFAULT_SLO_OBJECTIVE,
        low=0,
        high=1,
        low_open=True,
        expected="a share above 0 and below 1 (e.g. 0.99)",
    )
    assert objective is not None
    if objective >= 1:
        raise ConfigError(f"--llm-slo-objective: expected a share above 0 and below 1 (e.g. 0.99), got {value!r}")
    return objective


@dataclass(frozen=True, slots=True)
class LLMOptions:
    """The validated ``--llm-*`` options of a run."""

    model: str = ""
    endpoint: str = ""
    max_tokens: Range | None = None
    prompt_tokens: Range | None = None
    ignore_eos: bool = False
    think_time: Range | None = None
    api_key: str = ""
    slo_ttft_s: float | None = None
    slo_ttft_of: str = "any"
    slo_stream_rate_tps: float | None = DEFAULT_SLO_STREAM_RATE_TPS
    slo_objective: float = DEFAULT_SLO_OBJECTIVE
    stream_timeout_s: float = DEFAULT_STREAM_TIMEOUT_S
    timestamps: str = "kernel"
    results_path: str = ""
    seed: int = 0
    input_tokens: str = ""
    output_tokens: str = ""
    dataset: str = ""
    dataset_format: str = "auto"
    dataset_input_tokens: Range | None = None
    dataset_output_tokens: Range | None = None
    shared_prefix_tokens: int = 0
    turns: str = ""
    arrival: str = "closed"
    rate_rps: float | None = None
    rate_profile: str = ""
    """Open loop: the rate over time (``llmload.schedule.parse_rate_profile``) instead of ``rate_rps``."""
    burstiness: float = 1.0
    trace: str = ""
    trace_format: str = "auto"
    trace_speed: float = 1.0
    trace_start_s: float = 0.0
    trace_duration_s: float | None = None
    trace_max_requests: int | None = None
    block_tokens: int = 512
    tokenizer: str = ""
    """A local tokenizer (``--llm-tokenizer``) for prompts exact in tokens."""
    backends: str = ""
    backend_names: str = ""
    images: str = ""
    image_size: str = ""
    image_format: str = ""
    image_dir: str = ""
    batch_size: str = ""
    """Inputs per embeddings request, documents per score or rerank request (a distribution)."""
    tools: str = ""
    tool_choice: str = ""
    tool_latency: Range | None = None
    response_format: str = ""
    lora: tuple[tuple[str, float], ...] = ()
    """LoRA adapter names and weights (``--llm-lora``): each request's model is the next adapter."""

    def __repr__(self) -> str:
        return f"LLMOptions({', '.join(f'{k}={v!r}' for k, v in self.public_dict().items())})"

    @classmethod
    def from_parsed(cls, parsed: Any, *, defaults: Mapping[str, str] | None = None) -> LLMOptions:
        """Validate Locust's parsed options (or any object with ``llm_*`` attributes).

        ``defaults`` replace the defaults of options left empty, by parsed name (``llm_slo_ttft``).
        """
        fallback = defaults or {}

        def get(name: str, default: Any = "") -> Any:
            value = getattr(parsed, name, default)
            return fallback.get(name, value) if value in (None, "") else value

        endpoint = str(get("llm_endpoint") or "")
        if endpoint and endpoint not in ENDPOINTS:
            raise ConfigError(f"--llm-endpoint: expected one of {', '.join(ENDPOINTS)}, got {endpoint!r}")
        timestamps = str(get("llm_timestamps", "kernel") or "kernel").strip().lower()
        if timestamps not in TIMESTAMPS:
            raise ConfigError(f"--llm-timestamps: expected one of {', '.join(TIMESTAMPS)}, got {timestamps!r}")
        ttft_of = str(get("llm_slo_ttft_of", "any") or "any").strip().lower()
        if ttft_of not in TTFT_OF:
            raise ConfigError(f"--llm-slo-ttft-of: expected one of {', '.join(TTFT_OF)}, got {ttft_of!r}")
        lora = str(get("llm_lora") or "").strip()
        seed_text = str(get("llm_seed", "0") or "0")
        try:
            seed = int(seed_text)
        except ValueError:
            raise ConfigError(f"--llm-seed: expected an integer, got {seed_text!r}") from None
        return cls(
            model=str(get("llm_model") or ""),
            endpoint=endpoint,
            max_tokens=parse_range(get("llm_max_tokens"), option="llm-max-tokens", minimum=1, integer=True),
            prompt_tokens=parse_range(get("llm_prompt_tokens"), option="llm-prompt-tokens", minimum=1, integer=True),
            ignore_eos=_parse_bool(get("llm_ignore_eos", False)),
            think_time=parse_range(get("llm_think_time"), option="llm-think-time"),
            api_key=str(get("llm_api_key") or os.environ.get(API_KEY_ENV, "")),
            slo_ttft_s=parse_float(get("llm_slo_ttft"), option="llm-slo-ttft", exclusive=True),
            slo_ttft_of=ttft_of,
            slo_stream_rate_tps=parse_float(get("llm_slo_stream_rate"), option="llm-slo-stream-rate"),
            slo_objective=_objective(get("llm_slo_objective", str(DEFAULT_SLO_OBJECTIVE))),
            stream_timeout_s=parse_float(get("llm_stream_timeout"), option="llm-stream-timeout", exclusive=True)
            or DEFAULT_STREAM_TIMEOUT_S,
            timestamps=timestamps,
            results_path=str(get("llm_results") or ""),
            seed=seed,
            lora=parse_named_weights(lora, option="llm-lora") if lora else (),
            **_structured_options(get),
            **_image_options(get),
            batch_size=_batch_size_option(get),
            **_workload_options(get),
        )

    def public_dict(self) -> dict[str, Any]:
        """The options as reported in results and logs: the API key is never included."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            if name == "api_key":
                out["api_key_set"] = bool(self.api_key)
                continue
            value = getattr(self, name)
            if isinstance(value, Range):
                value = value.low if value.low == value.high else [value.low, value.high]
            out[name] = value
        return out
