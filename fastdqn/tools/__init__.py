"""The tools layer: the ``fastdqn`` command (train, eval, bench, sweep, plot), sweeps on
Ray, plots, run statistics, and ``fastdqn bench``'s sections in ``fastdqn.tools.bench``.

The top layer: it may import everything; nothing else imports it.
"""
