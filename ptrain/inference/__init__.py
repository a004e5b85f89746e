"""Using an export: `ptrain eval`, `ptrain predict` and `ptrain generate`."""
