"""Pipeline and policy files: models, loading with positions, validation."""
