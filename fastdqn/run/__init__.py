"""The running layer: the training loop, its frozen config, EnvPool envs and their row rule,
checkpoints, run folders, signals, logs, evaluation, memory planning, resume rules, and the
functions that build every component from a config.

May import every layer below it (replay, learn, pipeline, util); never the tools layer.
"""
