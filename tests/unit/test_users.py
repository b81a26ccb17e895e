"""The user classes: abstract flags, class settings, the requests each class sends, conversations, seeds.

Each test builds a real Locust ``Environment`` with options parsed by Locust's
own parser and fires Locust's ``init`` event on it, which registers llmload's
plugin and extensions as in a real run; it then instantiates user classes and
runs their task. Requests go to a scripted server on 127.0.0.1 in the test
process, which records every request's bytes.
"""

from __future__ import annotations

import json
import os
import random
from types import SimpleNamespace

import pytest
from locust import events as locust_events
from locust.env import Environment
from locust.event import Events

from llmload import datasets, prompts
from llmload.client import STREAM_OPTIONS
from llmload.errors import ConfigError, LLMRequestError
from llmload.options import Range
from llmload.plugin import get_plugin
from llmload.users import ChatbotUser, LLMUser, MultiTurnChatUser, SummarizationUser
from tests.support.chunks import DONE, chat_chunk, completion_chunk, usage_chunk
from tests.support.scripted_server import ScriptedServer, plain_response, sse_response

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
MODELS = ("served-model", "other-model")


class FakeLLM(ScriptedServer):
    """An OpenAI-compatible server: lists MODELS; answers POST number i with "answer i" (2 tokens).

    POSTs whose number is in ``fail`` get a 500; ``models_status`` is the status of GET /v1/models.
    """

    def __init__(self, *, fail=(), models_status="200 OK"):
        super().__init__(self._answer)
        self.fail = set(fail)
        self.models_status = models_status

    def _answer(self, _index: int, request: bytes) -> list:
        if request.startswith(b"GET /v1/models"):
            body = json.dumps({"object": "list", "data": [{"id": m, "object": "model"} for m in MODELS]})
            return plain_response(self.models_status, body.encode())
        n = len(self.posts) - 1
        if n in self.fail:
            return plain_response("500 Internal Server Error", b'{"error": {"message": "boom"}}')
        if request.startswith(f"POST {COMPLETIONS} ".encode()):
            chunks = [completion_chunk("answer"), completion_chunk(f" {n}", finish="length")]
        else:
            chunks = [chat_chunk(role="assistant"), chat_chunk("answer"), chat_chunk(f" {n}", finish="stop")]
        return sse_response([*chunks, usage_chunk(5, 2), DONE])

    @property
    def request_lines(self) -> list[str]:
        return [request.split(b"\r\n", 1)[0].decode() for request in self.requests]

    @property
    def posts(self) -> list[bytes]:
        return [request for request in self.requests if request.startswith(b"POST ")]

    @property
    def bodies(self) -> list[dict]:
        return [json.loads(request.partition(b"\r\n\r\n")[2]) for request in self.posts]

    def messages(self) -> list[list[dict]]:
        return [body["messages"] for body in self.bodies]


@pytest.fixture
def llm(monkeypatch):
    """``llm.environment(*argv)``: a Locust environment with llmload registered and options from ``argv``.

    ``llm.user(cls, env)`` instantiates a user; its connections are closed at the end of the test.
    Every request event fired on an environment is appended to ``llm.fired``.
    """
    from locust.argument_parser import get_parser

    for name in list(os.environ):
        if name.startswith("LOCUST_") or name == "LLMLOAD_API_KEY":
            monkeypatch.delenv(name)
    users: list[LLMUser] = []
    fired: list[dict] = []

    def environment(*argv: str) -> Environment:
        parsed = get_parser(default_config_files=[]).parse_args(list(argv))
        env = Environment(events=Events(), parsed_options=parsed)
        locust_events.init.fire(environment=env, runner=None, web_ui=None)  # llmload registers itself here
        get_plugin(env)  # Locust logs and swallows a listener's exception: fail here instead
        env.events.request.add_listener(lambda **kwargs: fired.append(kwargs))
        return env

    def user(cls: type[LLMUser], env: Environment) -> LLMUser:
        instance = cls(env)
        users.append(instance)
        return instance

    yield SimpleNamespace(environment=environment, user=user, fired=fired)
    for instance in users:
        instance.client.client.clientpool.close()


def clone(rng: random.Random) -> random.Random:
    """An independent generator in the same state: what the user will draw next."""
    copy = random.Random()
    copy.setstate(rng.getstate())
    return copy


def user_text(messages: list[dict]) -> str:
    assert messages[-1]["role"] == "user"
    return messages[-1]["content"]


# -- classes -------------------------------------------------------------------------------------


def test_shipped_classes_are_abstract_and_subclasses_run():
    for cls in (LLMUser, ChatbotUser, SummarizationUser, MultiTurnChatUser):
        assert cls.abstract is True, cls

    class Chat(ChatbotUser):
        pass

    class Summaries(SummarizationUser):
        pass

    class Conversations(MultiTurnChatUser):
        pass

    class Template(ChatbotUser):
        abstract = True

    assert (Chat.abstract, Summaries.abstract, Conversations.abstract, Template.abstract) == (False, False, False, True)
    assert Chat.tasks == [LLMUser.generate]


def test_class_attribute_defaults():
    assert (LLMUser.endpoint, LLMUser.model, LLMUser.ignore_eos) == ("chat", None, False)
    assert (LLMUser.backend, LLMUser.request_name, LLMUser.prompt_tokens) == (None, None, None)
    assert (LLMUser.max_tokens, LLMUser.think_time) == (100, (1.0, 5.0))
    assert (ChatbotUser.max_tokens, ChatbotUser.prompt_tokens, ChatbotUser.think_time) == (100, None, (1.0, 5.0))
    assert (SummarizationUser.max_tokens, SummarizationUser.prompt_tokens) == ((200, 300), (1000, 4000))
    assert SummarizationUser.think_time == (0.5, 2.0)
    assert (MultiTurnChatUser.max_tokens, MultiTurnChatUser.prompt_tokens) == (100, None)
    assert (MultiTurnChatUser.think_time, MultiTurnChatUser.turns) == ((2.0, 8.0), (2, 6))


def test_a_user_needs_llmload_registered_on_its_environment():
    class Chat(ChatbotUser):
        host = "http://127.0.0.1:9"

    with pytest.raises(ConfigError, match="llmload is not registered on this Locust environment"):
        Chat(Environment(events=Events()))


# -- the request a chatbot user sends ------------------------------------------------------------


def test_chatbot_sends_a_short_question_with_the_class_settings(llm):
    with FakeLLM() as server:

        class Chat(ChatbotUser):
            host = server.base_url
            model = "class-model"

        env = llm.environment("--llm-seed", "11")
        user = llm.user(Chat, env)
        expected = prompts.short_question(clone(user.rng))
        user.generate()

    assert server.request_lines == [f"POST {CHAT} HTTP/1.1"]  # the model is configured: no GET /v1/models
    assert server.bodies == [
        {
            "model": "class-model",
            "messages": [{"role": "user", "content": expected}],
            "stream": True,
            "max_tokens": 100,
            "stream_options": STREAM_OPTIONS,
        }
    ]
    [event] = llm.fired
    assert (event["request_type"], event["name"], event["response_length"], event["exception"]) == (
        "POST",
        CHAT,
        2,
        None,
    )
    assert event["url"] == f"{server.base_url}{CHAT}"
    [group] = get_plugin(env).store.groups.values()
    assert (group.backend, group.model, group.user_class) == (server.base_url, "class-model", "Chat")
    assert group.counters["ok"] == 1 and group.counters["output_tokens"] == 2


def test_prompt_length_and_max_tokens_from_class_ranges(llm):
    with FakeLLM() as server:

        class Chat(ChatbotUser):
            host = server.base_url
            model = "m"
            prompt_tokens = 60
            max_tokens = (20, 30)

        user = llm.user(Chat, llm.environment())
        expected = prompts.question_of_length(60, clone(user.rng))
        user.generate()
        draws = [user.draw_max_tokens() for _ in range(40)]
        assert [user.draw_prompt_tokens() for _ in range(3)] == [60, 60, 60]

    [body] = server.bodies
    assert body["messages"] == [{"role": "user", "content": expected}]
    assert 20 <= body["max_tokens"] <= 30 and isinstance(body["max_tokens"], int)
    assert set(draws) <= set(range(20, 31)) and len(set(draws)) > 3


def test_model_is_asked_of_the_host_once_and_the_first_one_used(llm):
    with FakeLLM() as server:

        class Chat(ChatbotUser):
            host = server.base_url

        env = llm.environment()
        first, second = llm.user(Chat, env), llm.user(Chat, env)
        first.generate()
        first.generate()
        second.generate()  # the model list is shared by every user of the process

    assert server.request_lines == ["GET /v1/models HTTP/1.1"] + [f"POST {CHAT} HTTP/1.1"] * 3
    assert [body["model"] for body in server.bodies] == ["served-model"] * 3
    assert [event["name"] for event in llm.fired] == [CHAT] * 3  # the model list is not a Locust request


def test_an_unreadable_model_list_is_a_failed_request_and_nothing_is_sent(llm):
    with FakeLLM(models_status="503 Service Unavailable") as server:

        class Chat(ChatbotUser):
            host = server.base_url

        env = llm.environment()
        user = llm.user(Chat, env)
        assert user.send("hello") is None

    assert server.request_lines == ["GET /v1/models HTTP/1.1"]
    [event] = llm.fired
    assert (event["request_type"], event["name"], event["response_time"]) == ("GET", "/v1/models", 0)
    assert isinstance(event["exception"], LLMRequestError) and event["exception"].kind == "http_5xx"
    assert get_plugin(env).store.is_empty()


def test_options_override_the_class_settings(llm):
    with FakeLLM() as server:

        class Chat(ChatbotUser):
            host = server.base_url
            model = "class-model"
            max_tokens = 100
            think_time = (1.0, 5.0)

        argv = ["--llm-model", "option-model", "--llm-max-tokens", "7", "--llm-think-time", "0.25"]
        argv += ["--llm-ignore-eos", "--llm-endpoint", "completions"]
        user = llm.user(Chat, llm.environment(*argv))
        expected = prompts.short_question(clone(user.rng))
        user.generate()
        assert [user.wait_time() for _ in range(3)] == [0.25, 0.25, 0.25]

    assert server.request_lines == [f"POST {COMPLETIONS} HTTP/1.1"]
    [body] = server.bodies
    assert {k: v for k, v in body.items() if k != "stream_options"} == {
        "model": "option-model",
        "prompt": expected,
        "stream": True,
        "max_tokens": 7,
        "ignore_eos": True,
    }
    assert llm.fired[0]["name"] == COMPLETIONS and llm.fired[0]["exception"] is None


def test_length_distribution_options_override_the_class(llm):
    class Chat(ChatbotUser):
        host = "http://127.0.0.1:9"
        prompt_tokens = 500
        max_tokens = (200, 300)

    user = llm.user(Chat, llm.environment("--llm-input-tokens", "40", "--llm-output-tokens", "12-14"))
    assert [user.draw_prompt_tokens() for _ in range(5)] == [40] * 5
    assert set(user.draw_max_tokens() for _ in range(60)) == {12, 13, 14}
    prompt = user.make_prompt()
    assert prompt == prompt.strip() and len(prompt.split()) > 20  # padded to ~40 tokens, not a bare question


def test_completions_endpoint_and_request_name_and_backend_label(llm):
    with FakeLLM() as server:

        class Complete(ChatbotUser):
            host = server.base_url
            model = "m"
            endpoint = "completions"
            request_name = "completion"
            backend = "gpu-a"
            max_tokens = 5
            ignore_eos = True

        env = llm.environment()
        user = llm.user(Complete, env)
        expected = prompts.short_question(clone(user.rng))
        user.generate()

    [body] = server.bodies
    assert server.request_lines == [f"POST {COMPLETIONS} HTTP/1.1"]
    assert (body["prompt"], body["max_tokens"], body["ignore_eos"], "messages" in body) == (expected, 5, True, False)
    assert [event["name"] for event in llm.fired] == ["completion"]
    [group] = get_plugin(env).store.groups.values()
    assert (group.backend, group.model, group.user_class) == ("gpu-a", "m", "Complete")


def test_shared_prefix_is_a_system_message_in_chat_and_leads_the_completion_prompt(llm):
    prefix = datasets.shared_prefix(30, 4)
    assert prefix.startswith("Reference material:\n")
    with FakeLLM() as server:

        class Chat(ChatbotUser):
            host = server.base_url
            model = "m"

        class Complete(Chat):
            endpoint = "completions"

        env = llm.environment("--llm-shared-prefix-tokens", "30", "--llm-seed", "4")
        chat, complete = llm.user(Chat, env), llm.user(Complete, env)
        chat_question = prompts.short_question(clone(chat.rng))
        complete_question = prompts.short_question(clone(complete.rng))
        chat.generate()
        complete.generate()
        chat.send("Second question?", history=[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}])

    chat_body, complete_body, history_body = server.bodies
    system = {"role": "system", "content": prefix}
    assert chat_body["messages"] == [system, {"role": "user", "content": chat_question}]
    assert complete_body["prompt"] == prefix + complete_question
    assert history_body["messages"] == [
        system,
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "Second question?"},
    ]


def test_send_returns_the_record_with_the_text_only_when_asked(llm):
    with FakeLLM(fail={2}) as server:

        class Chat(ChatbotUser):
            host = server.base_url
            model = "m"

        user = llm.user(Chat, llm.environment())
        kept = user.send("one", keep_text=True)
        plain = user.send("two")
        failed = user.send("three", keep_text=True)

    assert (kept.ok, kept.text, kept.output_tokens) == (True, "answer 0", 2)
    assert (plain.ok, plain.text) == (True, None)
    assert (failed.ok, failed.error_kind, failed.status) == (False, "http_5xx", 500)
    assert [user_text(m) for m in server.messages()] == ["one", "two", "three"]
    assert [event["exception"] is None for event in llm.fired] == [True, True, False]


# -- summarization ---------------------------------------------------------------------------------


def test_summarization_user_sends_a_document_of_the_drawn_length(llm):
    with FakeLLM() as server:

        class Summaries(SummarizationUser):
            host = server.base_url
            model = "m"
            prompt_tokens = 1200

        user = llm.user(Summaries, llm.environment())
        expected = prompts.summarization_prompt(1200, clone(user.rng))
        user.generate()
        user.generate()

    first, second = server.bodies
    assert first["messages"] == [{"role": "user", "content": expected}]
    assert user_text(second["messages"]) != expected
    assert user_text(second["messages"]).startswith("Summarize the following document in a few paragraphs:\n\n")
    assert 200 <= first["max_tokens"] <= 300 and 200 <= second["max_tokens"] <= 300


def test_summarization_user_draws_lengths_from_its_class_range(llm):
    class Summaries(SummarizationUser):
        host = "http://127.0.0.1:9"

    user = llm.user(Summaries, llm.environment())
    lengths = [user.draw_prompt_tokens() for _ in range(50)]
    assert all(1000 <= n <= 4000 for n in lengths) and len(set(lengths)) > 40
    assert all(0.5 <= user.wait_time() <= 2.0 for _ in range(50))
    header = "Summarize the following document in a few paragraphs:\n\n"
    assert all(user.make_prompt().startswith(header) for _ in range(3))


def test_dataset_prompt_and_its_answer_length_replace_the_class_settings(llm, tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text(json.dumps({"prompt": "Name three rivers in Spain.", "output_tokens": 64}) + "\n")
    with FakeLLM() as server:

        class Chat(ChatbotUser):
            host = server.base_url
            model = "m"
            max_tokens = 100

        class Summaries(SummarizationUser):
            host = server.base_url
            model = "m"

        env = llm.environment("--llm-dataset", str(path))
        llm.user(Chat, env).generate()
        llm.user(Summaries, env).generate()
        llm.user(Chat, llm.environment("--llm-dataset", str(path), "--llm-max-tokens", "9")).generate()

    assert [(user_text(b["messages"]), b["max_tokens"]) for b in server.bodies] == [
        ("Name three rivers in Spain.", 64),
        ("Name three rivers in Spain.", 64),
        ("Name three rivers in Spain.", 9),  # --llm-max-tokens wins over the dataset's length
    ]


# -- think time and arrivals -----------------------------------------------------------------------


def test_think_time_from_the_class_and_the_option(llm):
    class Fixed(ChatbotUser):
        host = "http://127.0.0.1:9"
        think_time = 2

    class Closed(ChatbotUser):
        host = "http://127.0.0.1:9"
        think_time = 0

    class Drawn(ChatbotUser):
        host = "http://127.0.0.1:9"
        think_time = (1.0, 5.0)

    env = llm.environment()
    assert [llm.user(Fixed, env).wait_time() for _ in range(3)] == [2.0, 2.0, 2.0]
    assert llm.user(Closed, env).wait_time() == 0.0
    drawn = llm.user(Drawn, env)
    waits = [drawn.wait_time() for _ in range(100)]
    assert all(1.0 <= w <= 5.0 for w in waits) and len(set(waits)) == 100
    assert min(waits) < 2.0 and max(waits) > 4.0
    # --llm-think-time 0 (the study's closed loop) overrides every class.
    env = llm.environment("--llm-think-time", "0")
    assert [llm.user(cls, env).wait_time() for cls in (Fixed, Drawn)] == [0.0, 0.0]
    env = llm.environment("--llm-think-time", "3-4")
    assert all(3.0 <= llm.user(Fixed, env).wait_time() <= 4.0 for _ in range(20))


def test_a_steered_think_time_reaches_users_already_running(llm):
    class Fixed(ChatbotUser):
        host = "http://127.0.0.1:9"
        think_time = 2

    env = llm.environment()
    running = llm.user(Fixed, env)
    assert running.wait_time() == 2.0
    env.llmload.steer_think_time(Range(0.5, 0.5))  # what llmload.steering does on this process
    assert [running.wait_time() for _ in range(3)] == [0.5, 0.5, 0.5]


def test_open_loop_users_do_not_think(llm):
    class Chat(ChatbotUser):
        host = "http://127.0.0.1:9"
        think_time = 3

    env = llm.environment("--llm-arrival", "constant", "--llm-rate", "5")
    assert llm.user(Chat, env).wait_time() == 0.0


# -- seeds -----------------------------------------------------------------------------------------


def test_each_user_has_its_own_seed_reproducible_across_runs(llm):
    class Chat(ChatbotUser):
        host = "http://127.0.0.1:9"

    def draws(env: Environment, n_users: int = 3) -> list[list]:
        out = []
        for _ in range(n_users):
            user = llm.user(Chat, env)
            out.append([user.make_prompt() for _ in range(4)] + [user.wait_time() for _ in range(2)])
        return out

    run = draws(llm.environment("--llm-seed", "7"))
    assert len({tuple(d) for d in run}) == 3  # distinct users, distinct workloads
    random.seed(99)  # the users' generators are their own
    assert draws(llm.environment("--llm-seed", "7")) == run
    other = draws(llm.environment("--llm-seed", "8"))
    assert all(a != b for a, b in zip(other, run, strict=True))


# -- multi-turn conversations ---------------------------------------------------------------------


def test_multi_turn_sends_the_real_previous_answers_as_context(llm):
    with FakeLLM() as server:

        class Conversation(MultiTurnChatUser):
            host = server.base_url
            model = "m"
            turns = 3

        user = llm.user(Conversation, llm.environment("--llm-seed", "3"))
        for _ in range(3):
            user.generate()
        history_after_session = list(user.history)
        user.generate()  # the fourth turn starts a new conversation

    q = [user_text(m) for m in server.messages()]
    assert len(set(q)) == 4
    assert server.messages() == [
        [{"role": "user", "content": q[0]}],
        [
            {"role": "user", "content": q[0]},
            {"role": "assistant", "content": "answer 0"},
            {"role": "user", "content": q[1]},
        ],
        [
            {"role": "user", "content": q[0]},
            {"role": "assistant", "content": "answer 0"},
            {"role": "user", "content": q[1]},
            {"role": "assistant", "content": "answer 1"},
            {"role": "user", "content": q[2]},
        ],
        [{"role": "user", "content": q[3]}],
    ]
    assert history_after_session == [
        {"role": "user", "content": q[0]},
        {"role": "assistant", "content": "answer 0"},
        {"role": "user", "content": q[1]},
        {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": q[2]},
        {"role": "assistant", "content": "answer 2"},
    ]
    assert user.history == [{"role": "user", "content": q[3]}, {"role": "assistant", "content": "answer 3"}]
    assert all(body["max_tokens"] == 100 and body["model"] == "m" for body in server.bodies)


def test_multi_turn_questions_are_seeded_short_questions(llm):
    with FakeLLM() as server:

        class Conversation(MultiTurnChatUser):
            host = server.base_url
            model = "m"
            turns = 2

        user = llm.user(Conversation, llm.environment())
        user.start_session()
        expected = prompts.short_question(clone(user.rng))
        assert user.history == []
        user.generate()

    assert server.messages() == [[{"role": "user", "content": expected}]]


def test_a_failed_turn_abandons_the_conversation(llm):
    with FakeLLM(fail={1}) as server:

        class Conversation(MultiTurnChatUser):
            host = server.base_url
            model = "m"
            turns = 5

        user = llm.user(Conversation, llm.environment())
        for _ in range(4):
            user.generate()

    lengths = [len(m) for m in server.messages()]
    assert lengths == [1, 3, 1, 3]  # turn 2 failed: turn 3 opens a new conversation
    q = [user_text(m) for m in server.messages()]
    assert server.messages()[3][:2] == [
        {"role": "user", "content": q[2]},
        {"role": "assistant", "content": "answer 2"},
    ]
    assert [event["exception"] is None for event in llm.fired] == [True, False, True, True]


def test_turns_option_overrides_the_class_and_conversations_stay_on_chat(llm):
    with FakeLLM() as server:

        class Conversation(MultiTurnChatUser):
            host = server.base_url
            model = "m"
            turns = 5
            endpoint = "completions"

        user = llm.user(Conversation, llm.environment("--llm-turns", "2", "--llm-endpoint", "completions"))
        for _ in range(5):
            user.generate()

    assert server.request_lines == [f"POST {CHAT} HTTP/1.1"] * 5
    assert [len(m) for m in server.messages()] == [1, 3, 1, 3, 1]


def test_default_conversations_have_two_to_six_turns(llm):
    with FakeLLM() as server:

        class Conversation(MultiTurnChatUser):
            host = server.base_url
            model = "m"

        user = llm.user(Conversation, llm.environment("--llm-seed", "5"))
        for _ in range(40):
            user.generate()

    turn_numbers = [(len(m) + 1) // 2 for m in server.messages()]
    sessions, current = [], 0
    for number in turn_numbers:
        if number == 1 and current:
            sessions.append(current)
        assert number == (1 if number == 1 else current + 1)
        current = number
    assert sessions and all(2 <= s <= 6 for s in sessions)
    assert len(set(sessions)) > 1


def test_dataset_conversations_replay_their_user_turns_with_the_real_answers(llm, tmp_path):
    conversation = [
        {"from": "human", "value": "What is the capital of France?"},
        {"from": "gpt", "value": "The capital of France is Paris."},
        {"from": "human", "value": "And how many people live there?"},
        {"from": "gpt", "value": "About two million."},
        {"from": "human", "value": "Thanks!"},
        {"from": "gpt", "value": "You are welcome."},
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps([{"id": "c1", "conversations": conversation}]))
    [entry] = datasets.load_dataset(str(path)).entries
    with FakeLLM() as server:

        class Conversation(MultiTurnChatUser):
            host = server.base_url
            model = "m"
            turns = 2

        user = llm.user(Conversation, llm.environment("--llm-dataset", str(path)))
        for _ in range(3):
            user.generate()

    assert server.messages() == [
        [{"role": "user", "content": "What is the capital of France?"}],
        [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "answer 0"},  # the server's answer, not the dataset's
            {"role": "user", "content": "And how many people live there?"},
        ],
        [{"role": "user", "content": "What is the capital of France?"}],  # two turns drawn: a new conversation
    ]
    assert [body["max_tokens"] for body in server.bodies] == [entry.output_tokens] * 3
