"""Adapters for RL engines (TRL, verl, SkyRL). Each imports its framework lazily; `engine_loss` holds what
the verl and SkyRL losses share."""
