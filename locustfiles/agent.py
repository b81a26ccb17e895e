"""An agent with tools: each turn may call a tool, whose result goes back after the tool's latency.

    locust -f locustfiles/agent.py --host http://127.0.0.1:8000 --headless -u 10 -r 2 -t 5m \
        --llm-tool-latency 0.2-1 --llm-results results/agent.json

Every request sends ``tools`` (a weather lookup; ``--llm-tools FILE`` for your own) with
``tool_choice: auto``; the results' ``answers`` say how many answers were a complete tool call
or a text answer (docs/metrics.md, "Tool calls and structured output").
"""

from llmload import AgentUser


class Agent(AgentUser):
    pass
