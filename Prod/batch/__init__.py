"""Batch jobs against the stores, run from the CLI: recommendation exports for campaigns
(:mod:`.export`) and the A/B test report (:mod:`.ab_report`). Tooling: no service imports it."""
