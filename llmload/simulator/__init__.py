"""The embedded simulator: a vLLM-compatible OpenAI server with modelled timing.

Run it with ``llmload sim``; start it from Python with
:class:`llmload.simulator.process.SimulatorProcess`. It runs as its own process
on pure asyncio and never imports Locust or gevent.
"""
