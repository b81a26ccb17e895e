"""Summarization traffic: 1k-4k-token documents, 200-300 output tokens.

locust -f locustfiles/summarization.py --host http://127.0.0.1:8000 --headless -u 20 -r 5 -t 5m
"""

from llmload import SummarizationUser


class Summarization(SummarizationUser):
    pass
