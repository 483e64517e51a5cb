"""Numba kernels behind fastdqn, installed as ``fastdqn.kernels``.

Kernels take only arrays and scalars and never allocate in steady state; the typed,
validating wrappers live in the ``fastdqn`` modules that call them.
"""
