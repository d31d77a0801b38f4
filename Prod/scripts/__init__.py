"""One-shot jobs (run as modules: python -m Prod.scripts.ingest_postgres_db)."""
