"""Deploying a stage and checking it: the smoke test (more to come with the deploy issue)."""
