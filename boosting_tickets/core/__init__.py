"""Foundations shared by every other package: settings, errors, registries, plugins, file names,
atomic storage and provenance. Nothing here imports torch at module level."""
