"""Chatbot traffic: short questions, ~100 output tokens, think time between turns.

    locust -f locustfiles/chatbot.py --host http://127.0.0.1:8000 --headless -u 100 -r 10 -t 5m \
        --llm-results results/chatbot.json
"""

from llmload import ChatbotUser


class Chatbot(ChatbotUser):
    pass
