"""Offline modelling work: data notes and the ALS evaluation/tuning package (RecoSystem)."""
