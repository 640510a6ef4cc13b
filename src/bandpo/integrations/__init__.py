"""Adapters for RL engines (TRL, verl). Each imports its framework lazily."""
