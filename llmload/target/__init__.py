"""A real vLLM server as a local load-test target and test fixture (``llmload target vllm``).

Modules: ``venv`` finds or installs the Python that runs vLLM (a cached venv,
never this project's environment); ``model`` holds the shape table and builds
random-weight models through ``_build_model.py`` (run by that Python);
``vllm`` starts, health-waits and stops one server process; ``process`` has
``VLLMProcess``, the context manager tests and benchmarks use; ``cli`` is the
sub-command. Nothing here imports torch, and importing it starts nothing.

See docs/vllm.md.
"""
