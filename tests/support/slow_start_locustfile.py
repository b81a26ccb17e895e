"""A locustfile whose import blocks for 4 s without yielding, like a slow start on a loaded machine."""

import time

_start = time.time()
while time.time() - _start < 4:
    pass

from llmload import ChatbotUser  # noqa: E402


class Chatbot(ChatbotUser):
    pass
