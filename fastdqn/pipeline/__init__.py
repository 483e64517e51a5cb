"""The pipeline between replay and learner: pinned staging blocks and events for every
host<->device transfer, the feeder that prefetches batches, the priority write-back, and
the ``ReplayPipeline`` that owns them for the trainer.

May import ``fastdqn.replay``, ``fastdqn.learn`` and ``fastdqn.util``; never the running or
tools layers.
"""
