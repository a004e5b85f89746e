"""The typed config tree with every default, strict YAML loading, `base:` inheritance, dotted overrides and the
generic cross-field checks. Imports nothing of data, model, tasks or training."""
