"""Small helpers every layer may use: durable file writes, checked RNG states, phase
timers and argument checks. Imports nothing from fastdqn but ``fastdqn.errors``."""
