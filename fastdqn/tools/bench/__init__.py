"""``fastdqn bench``: its command, its sections, the harness they share, the measuring core and the baselines."""
