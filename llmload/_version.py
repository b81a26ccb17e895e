"""The package version, kept apart so setup tooling can read it without importing Locust."""

__version__ = "0.1.0"
