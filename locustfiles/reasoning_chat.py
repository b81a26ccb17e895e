"""Chat with a reasoning model: it thinks before it answers; the TTFT SLO targets the first answer token.

    locust -f locustfiles/reasoning_chat.py --host http://127.0.0.1:8000 --headless -u 20 -r 5 -t 5m \
        --llm-slo-ttft 10 --llm-results results/reasoning.json

Results gain a ``reasoning`` section per group: time to first answer token, reasoning time,
reasoning and answer tokens, the answer's stream rate (docs/metrics.md, "Reasoning models").
"""

from llmload import ReasoningChatUser


class ReasoningChat(ReasoningChatUser):
    pass
