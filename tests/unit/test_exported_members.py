"""The public API is exactly ``llmload.__all__``, sorted."""

import llmload


def test_all_is_sorted_and_complete():
    assert llmload.__all__ == sorted(llmload.__all__)
    public = {name for name in vars(llmload) if not name.startswith("_")} - {
        "hooks", "client", "errors", "metrics", "options", "plugin", "record", "users", "stream", "sse",
        "prompts", "results", "summary", "simulator", "target", "cli", "demo",
    }
    assert public == set(llmload.__all__) - {"__version__"}
