"""Multi-turn chat: conversations of 2-6 turns that send the real previous answers as context.

    locust -f locustfiles/multi_turn.py --host http://127.0.0.1:8000 --headless -u 50 -r 10 -t 10m \
        --llm-turns 2-6 --llm-results results/multi-turn.json
"""

from llmload import MultiTurnChatUser


class MultiTurnChat(MultiTurnChatUser):
    pass
