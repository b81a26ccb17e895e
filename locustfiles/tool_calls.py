"""Requests that must call a tool (``tool_choice: required``); the answer is judged a complete call.

    locust -f locustfiles/tool_calls.py --host http://127.0.0.1:8000 --headless -u 10 -t 2m \
        --llm-tools tools.json --llm-tool-choice get_weather --llm-results results/tools.json
"""

from llmload import ToolCallUser


class ToolCalls(ToolCallUser):
    pass
