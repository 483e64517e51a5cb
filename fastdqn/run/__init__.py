"""The running layer: the training loop, its frozen config, EnvPool envs and their row rule,
checkpoints, run folders, signals, logs, evaluation, memory planning, resume rules, the
functions that build every component from a config, and ``actors/``: one run's env stepping
spread over Ray actors feeding one learner.

May import every layer below it (replay, learn, pipeline, util); never the tools layer.
"""
