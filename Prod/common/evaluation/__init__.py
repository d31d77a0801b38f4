"""Offline evaluation: splits and ranking metrics (functions of recommended/relevant ids)."""
