"""Canonical dataset format, the default-dataset generator and importers from public formats."""
