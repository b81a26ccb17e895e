"""Tool calls and structured output: request bodies, tool-call accumulation, and the judge of answers."""

from __future__ import annotations

import json

import orjson
import pytest

from llmload import structured
from llmload.errors import ConfigError
from llmload.figures import Slo, group_body
from llmload.metrics import MetricsStore
from llmload.record import RequestRecord
from llmload.request_kinds import ANSWER_SCHEMA, WEATHER_TOOL
from llmload.simulator.structured_answer import instance_of, pieces
from llmload.stream import StreamReader


def read(deltas: list[dict]) -> RequestRecord:
    record = RequestRecord(
        backend="b", model="m", user_class="U", endpoint="/v1/chat/completions", t_send=0.0, start_wall=0.0
    )
    reader = StreamReader(record, chat=True, keep_text=True)
    for i, delta in enumerate(deltas):
        assert reader.on_event(orjson.dumps({"choices": [{"index": 0, "delta": delta}]}), 0.1 * (i + 1))
    reader.on_event(b"[DONE]", 1.0)
    reader.finish()
    return record


def call(name: str, arguments: list[str]) -> list[dict]:
    first = {
        "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": ""}}]
    }
    return [first] + [{"tool_calls": [{"index": 0, "function": {"arguments": a}}]} for a in arguments]


def ask(**kwargs) -> structured.Ask:
    return structured.ask_of(
        tools=kwargs.get("tools"), tool_choice=kwargs.get("tool_choice", "auto"), schema=kwargs.get("schema"), where="T"
    )


def test_streamed_tool_call_pieces_are_joined_and_judged():
    record = read(call("get_weather", ['{"ci', 'ty": "Oslo", ', '"unit": "celsius"}']))
    assert record.tool_calls == [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Oslo", "unit": "celsius"}'}
    ]
    assert len(record.token_times) == 4  # every token-carrying tool-call delta is a token
    required = ask(tools=[WEATHER_TOOL], tool_choice="required")
    assert required.judge(record)
    assert ask(tools=[WEATHER_TOOL], tool_choice="get_weather").judge(record)


@pytest.mark.parametrize(
    "deltas",
    [
        call("get_weather", ['{"city": "Oslo"}']),  # a required argument missing
        call("get_weather", ['{"city": "Oslo", "unit": "kelvin"}']),  # not in the enum
        call("get_weather", ['{"city": "Os']),  # cut off: not JSON
        call("get_time", ["{}"]),  # no such tool
        [{"content": "It is sunny."}],  # words where a call was required
    ],
)
def test_incomplete_or_wrong_tool_calls_are_invalid(deltas):
    assert not ask(tools=[WEATHER_TOOL], tool_choice="required").judge(read(deltas))


def test_with_auto_a_text_answer_is_valid_but_an_empty_one_is_not():
    auto = ask(tools=[WEATHER_TOOL])
    assert auto.judge(read([{"content": "Sunny"}]))
    assert not auto.judge(read([{"content": "   "}]))


def test_schema_answers():
    schema = ask(schema=ANSWER_SCHEMA)
    assert schema.judge(read([{"content": '{"answer": "42", '}, {"content": '"confidence": 0.9}'}]))
    assert not schema.judge(read([{"content": '{"answer": "42"}'}]))  # confidence is required
    assert not schema.judge(read([{"content": "42"}]))
    assert not schema.judge(read([{"content": '{"answer": "4'}]))  # cut by max_tokens


def test_request_bodies():
    body = ask(tools=[WEATHER_TOOL], tool_choice="get_weather", schema=ANSWER_SCHEMA).extra_body()
    assert body["tools"] == [WEATHER_TOOL]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA},
    }
    assert ask(tools=[WEATHER_TOOL], tool_choice="required").extra_body()["tool_choice"] == "required"
    assert not ask().judged and ask().extra_body() == {}


def test_an_invalid_answer_succeeds_but_misses_the_slo():
    store = MetricsStore(slo_stream_rate_tps=None)
    for valid in (True, False, None):
        record = read([{"content": "x"}, {"content": "y"}])
        record.answer_valid = valid
        store.record(record)
    group = next(iter(store.groups.values()))
    body = group_body(group, slo=Slo.of(store))
    assert body["requests"]["ok"] == 3 and body["requests"]["failed"] == 0
    assert body["answers"] == {"checked": 2, "valid": 1, "valid_share": 0.5}
    assert body["slo"]["met"] == 2  # the invalid answer is the one miss


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_bad_files_and_names_are_one_clear_line(tmp_path):
    tools = write(tmp_path, "tools.json", json.dumps([WEATHER_TOOL]))
    cases = {
        "--llm-tools {p}: not valid JSON": dict(
            tools_path=write(tmp_path, "bad.json", "[{"), tool_choice="", schema_path=""
        ),
        "tool 1 (f): not a valid JSON schema": dict(
            tools_path=write(
                tmp_path,
                "badschema.json",
                json.dumps([{"type": "function", "function": {"name": "f", "parameters": {"type": 5}}}]),
            ),
            tool_choice="",
            schema_path="",
        ),
        "no tool 'get_time'": dict(tools_path=tools, tool_choice="get_time", schema_path=""),
        "--llm-tool-choice: only with --llm-tools FILE": dict(tools_path="", tool_choice="required", schema_path=""),
        "not a valid JSON schema": dict(
            tools_path="", tool_choice="", schema_path=write(tmp_path, "schema.json", '{"type": "nonsense"}')
        ),
        "expected a non-empty JSON list of tools": dict(
            tools_path=write(tmp_path, "empty.json", "[]"), tool_choice="", schema_path=""
        ),
    }
    for message, kwargs in cases.items():
        with pytest.raises(ConfigError) as caught:
            structured.ask_from(**kwargs)
        text = str(caught.value)
        assert message.format(p=kwargs["tools_path"]) in text and "\n" not in text, text
    assert structured.ask_from(tools_path=tools, tool_choice="get_weather", schema_path="").judged


def test_the_simulators_answers_follow_the_schemas():
    validator = structured.ask_of(tools=None, tool_choice="auto", schema=ANSWER_SCHEMA, where="T")
    text = "".join(pieces(instance_of(ANSWER_SCHEMA)))
    assert validator.judge(read([{"content": text}]))
    arguments = "".join(pieces(instance_of(WEATHER_TOOL["function"]["parameters"])))
    assert ask(tools=[WEATHER_TOOL], tool_choice="required").judge(read(call("get_weather", [arguments])))


def test_console_and_report_show_the_valid_share():
    from llmload.render import answers

    store = MetricsStore(slo_stream_rate_tps=None)
    for valid in (True, True, False):
        record = read([{"content": "x"}])
        record.answer_valid = valid
        store.record(record)
    body = group_body(next(iter(store.groups.values())), slo=Slo.of(store))
    doc = {"groups": [{"backend": "b", "model": "m", "user_class": "U", **body}], "total": body}
    assert answers.text_lines(doc)[-1] == "  b · m · U: 2 of 3 (66.7%)"
    assert 'data-key="answers.valid_share"' in answers.html_section(doc) and ">66.7%<" in answers.html_section(doc)
    assert answers.text_lines({"groups": [], "total": {}}) == [] and answers.html_section({"groups": []}) == ""


def test_with_none_a_call_is_invalid_and_words_are_valid():
    none = ask(tools=[WEATHER_TOOL], tool_choice="none")
    assert not none.judge(read(call("get_weather", ['{"city": "Oslo", "unit": "celsius"}'])))
    assert none.judge(read([{"content": "Sunny"}]))
