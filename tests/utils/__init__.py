"""Helpers shared by tests of several areas (data set-up, publishing a real model)."""
