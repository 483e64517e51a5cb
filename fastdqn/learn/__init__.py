"""The learning layer: Q-networks, the DQN update as pure functions of tensors, the
``Learner`` that owns the networks and the optimizer, CUDA-graph capture and the checks
of batches and saved learner states.

May import ``fastdqn.replay`` (the batch's fields) and ``fastdqn.util``; never the
pipeline, running or tools layers.
"""
