"""A scoring service (vLLM's ``/score``): a short query against 4-16 documents, one score per pair.

    locust -f locustfiles/scorer.py --host http://127.0.0.1:8000 --headless -u 10 -t 2m \
        --llm-batch-size 8 --llm-results results/scorer.json
"""

from llmload import ScoreUser


class Scorer(ScoreUser):
    pass
