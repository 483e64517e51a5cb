"""``fastdqn bench``: its sections and the measuring harness they share."""
