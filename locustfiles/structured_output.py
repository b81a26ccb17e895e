"""Requests for a JSON answer following a schema (``response_format``); the answer is validated.

    locust -f locustfiles/structured_output.py --host http://127.0.0.1:8000 --headless -u 10 -t 2m \
        --llm-response-format schema.json --llm-results results/structured.json
"""

from llmload import StructuredOutputUser


class StructuredOutput(StructuredOutputUser):
    pass
