"""The pipeline between replay and learner: the feeder that prefetches batches, the priority
write-back, and the ``ReplayPipeline`` that owns them for the trainer. Their pinned staging
blocks and events come from ``fastdqn.util.transfer``.

May import ``fastdqn.replay``, ``fastdqn.learn`` and ``fastdqn.util``; never the running or
tools layers.
"""
