"""Capacity search: how many concurrent chat users does this backend serve within the SLO?

Closed-loop chat users with the Backprop study's settings (short questions,
``max_tokens`` 100, no think time), stepped by ``CapacityShape`` until the SLO
(95% of requests at >= 10 tok/s and TTFT <= 2 s by default) breaks, then
bisected. See docs/capacity.md.

    locust -f locustfiles/capacity.py --host http://127.0.0.1:8000 --headless \
        --llm-results results/capacity.json          # or: llmload capacity --host URL
"""

from llmload import CapacityShape, ChatbotUser


class Chatbot(ChatbotUser):
    think_time = 0


class Capacity(CapacityShape):
    pass
