"""``CudaGraphStep``: one training step captured as a CUDA graph and replayed on static inputs.

Capture runs the step a few times on a side stream first (compiling, allocating optimizer
state), puts every tracked tensor (weights, optimizer state, counters) back as it was, then
captures one step. Replays read static input tensors that the step owns: each call copies
its inputs into them on the device's stream.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

WARMUP_STEPS = 3


class CudaGraphStep:
    """``step(*inputs)`` replays ``body(*static_inputs)``, captured at the first call.

    ``tracked()`` yields every tensor the body changes that must not keep the warm-up's
    changes; tensors first created by the warm-up (fresh optimizer state) are zeroed.
    """

    def __init__(self, body: Callable, tracked: Callable[[], Iterable[torch.Tensor]], device) -> None:
        self._body, self._tracked, self._device = body, tracked, torch.device(device)
        self._graph: torch.cuda.CUDAGraph | None = None
        self._inputs: tuple[torch.Tensor, ...] = ()
        self._outputs: tuple[torch.Tensor, ...] = ()

    def reset(self) -> None:
        """Capture again at the next call (the tensors the graph points at were replaced)."""
        self._graph = None

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if not self._inputs:
            self._inputs = tuple(torch.empty_like(x, device=self._device) for x in inputs)
        # A graph reads fixed addresses, so each batch is copied into the graph's own inputs
        # (device to device): the caller's tensors are refilled while the graph may still read
        # them (a feeder alternates batches, queuing the next draw before this update).
        for src, dst in zip(inputs, self._inputs):
            dst.copy_(src, non_blocking=True)
        if self._graph is None:
            self._capture()
        self._graph.replay()
        # The graph overwrites its outputs on every replay; hand out copies.
        return tuple(x.clone() for x in self._outputs)

    def _capture(self) -> None:
        saved = {id(t): t.clone() for t in self._tracked()}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARMUP_STEPS):
                self._body(*self._inputs)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for t in self._tracked():
                if id(t) in saved:
                    t.copy_(saved[id(t)])
                else:
                    t.zero_()  # state made by the warm-up: fresh optimizer state is zeros
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._outputs = self._body(*self._inputs)
        self._graph = graph
