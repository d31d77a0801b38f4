"""Benchmarks and load generators (the one home for them; services hold no benchmark code).

- :mod:`Prod.bench.faults`: ``reco bench faults``, stores and the trainer killed under load.
"""

from Prod.bench.faults import FAULTS, FaultsConfig, run_faults_bench

__all__ = ["FAULTS", "FaultsConfig", "run_faults_bench"]
