"""Dataset tooling no service runs: the canonical format's writer, the default-dataset generator,
importers from public formats, the shared cleaning rules, and (:mod:`.ingest`) the validation and
Postgres / Chroma loading behind the one-shot jobs. The format's names and event weights, which
the services read too, are :mod:`Prod.common.canonical_format`."""
