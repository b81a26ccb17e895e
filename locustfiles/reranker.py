"""A reranker: each request ranks 8-32 documents of 64-256 tokens against a short query (vLLM's ``/rerank``).

    locust -f locustfiles/reranker.py --host http://127.0.0.1:8000 --headless -u 10 -t 2m \
        --llm-batch-size 16-64 --llm-results results/reranker.json

The figures are latency, requests, documents and prompt tokens per second (docs/metrics.md,
"Embeddings, score and rerank"). ``locustfiles/scorer.py`` loads vLLM's ``/score`` instead.
"""

from llmload import RerankUser


class Reranker(RerankUser):
    pass
