"""Offline evaluation, tuning and benchmarks of the ALS recommender (reco evaluate|tune|bench)."""
