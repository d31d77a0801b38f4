"""Code shared by more than one service: settings access, stores, models, ALS math, data."""
