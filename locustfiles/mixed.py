"""Chatbot and summarization users together: four chat users for every summarizer.

locust -f locustfiles/mixed.py --host http://127.0.0.1:8000 --headless -u 50 -r 10 -t 5m
"""

from llmload import ChatbotUser, SummarizationUser


class Chatbot(ChatbotUser):
    weight = 4


class Summarization(SummarizationUser):
    weight = 1
