"""Offline evaluation and tuning of the ALS recommender (reco evaluate|tune)."""
