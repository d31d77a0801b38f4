"""Ingest logic shared by the one-shot jobs and `reco ingest`."""
