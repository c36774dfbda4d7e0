"""llmflow."""
