"""The ALS trainer service: train from Postgres, publish versioned models, switch, roll back."""

from Prod.als_trainer.service import RunResult, read_status, rollback, run_training

__all__ = ["RunResult", "read_status", "rollback", "run_training"]
