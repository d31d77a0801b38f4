"""Benchmarks and quality runs of the platform: the one home for them (services hold none).

- :mod:`.faults`: ``reco bench faults``, stores and the trainer killed under load;
- :mod:`.serving` (+ :mod:`.naive`, its baseline server): ``reco bench serving``;
- :mod:`.ingest`: ``reco bench ingest`` and ``reco bench embed``;
- :mod:`.als`: ``reco bench als``, this ALS against ``implicit``;
- :mod:`.chat` (+ :mod:`.dialogues`): ``reco bench chat`` and ``reco eval chat``;
- stand-ins that run offline: :mod:`.ollama_stub` (an Ollama server), :mod:`.rerankers`
  (cross-encoders); :mod:`.servers` starts and stops the processes a benchmark runs.

``reco evaluate`` and ``reco tune`` (offline ALS research) live in :mod:`Modeling.RecoSystem`.
"""
