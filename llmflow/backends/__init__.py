"""Backends: the official anthropic SDK client, pointed at the API or at the emulator."""

from llmflow.backends.client import BackendName, open_client, sdk_errors

__all__ = ["BackendName", "open_client", "sdk_errors"]
