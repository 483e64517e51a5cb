"""Adapters that let other RL libraries use fastdqn's replay buffer."""
