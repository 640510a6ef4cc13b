"""Adapters for RL engines (TRL, verl, SkyRL). Each imports its framework lazily; `engine_loss` holds what
the verl and SkyRL losses share; `math_dapo` is the verl recipe's verifier (examples/verl/reward.py)."""
