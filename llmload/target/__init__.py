"""A real vLLM server as a local load-test target and test fixture."""
