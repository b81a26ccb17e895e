"""An embeddings service (``/v1/embeddings``): each request embeds a batch of 1-8 texts of 64-256 tokens.

    locust -f locustfiles/embeddings.py --host http://127.0.0.1:8000 --headless -u 20 -t 2m \
        --llm-batch-size 1-16 --llm-input-tokens 128-512 --llm-results results/embeddings.json

There is no token stream: the figures are latency, requests, inputs and prompt tokens per
second (docs/metrics.md, "Embeddings, score and rerank"). The server must serve a pooling
model (vLLM: ``--runner pooling``).
"""

from llmload import EmbeddingsUser


class Embedder(EmbeddingsUser):
    pass
