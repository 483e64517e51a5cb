"""PriorityFeedback's ordering, checked on the CPU with a stand-in stream: copies run only
when an event after them is waited on, so reading the host copy before its event, or writing
an update's errors at the wrong update, shows up as wrong values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fastdqn.pipeline.priority_feedback import PriorityFeedback
from fastdqn.util.transfer import Readback

B = 4


class LazyStream:
    """Stand-in for a CUDA stream: a copy runs when an event recorded after it is synchronized."""

    def __init__(self):
        self.ops, self.done = [], 0

    def copy(self, dst, src):
        self.ops.append((dst, src.clone()))  # what the stream would read when it gets there

    def event(self):
        stream = self

        class Event:
            def record(self):
                self.mark = len(stream.ops)

            def synchronize(self):
                while stream.done < self.mark:
                    dst, src = stream.ops[stream.done]
                    dst.copy_(src)
                    stream.done += 1

        return Event()


class Buffer:
    """Records update_priorities calls (copies, as the caller's arrays are reused)."""

    def __init__(self):
        self.calls = []

    def update_priorities(self, index, priorities):
        self.calls.append((np.array(index), np.array(priorities)))


def feedback(buffer, stream):
    host = torch.full((B,), -1.0)  # a value no TD error has: reading it early is visible
    return PriorityFeedback(buffer, B, Readback(host, copy=stream.copy, event=stream.event))


def update(i):
    """Ids and |TD errors| of update i."""
    return np.arange(B, dtype=np.int64) + 10 * i, torch.arange(B, dtype=torch.float32) + 0.5 + i


def test_update_i_is_written_when_update_i_plus_1_is_pushed_after_its_copy():
    buffer, stream = Buffer(), LazyStream()
    fb = feedback(buffer, stream)
    for i in range(5):
        index, td = update(i)
        fb.push(index, td)
        index[:] = -7  # the feeder refills its batch: what was pushed must not change
        td.fill_(99.0)  # the learner's output tensor is overwritten by the next update
        assert len(buffer.calls) == i  # update i's errors wait for the next push
        if i:
            want_index, want_td = update(i - 1)
            np.testing.assert_array_equal(buffer.calls[-1][0], want_index)
            np.testing.assert_array_equal(buffer.calls[-1][1], want_td.numpy())
    assert stream.done == 4  # the copy of the last push has not been waited for
    fb.flush()
    np.testing.assert_array_equal(buffer.calls[-1][1], update(4)[1].numpy())
    fb.flush()
    assert len(buffer.calls) == 5  # nothing held any more


def test_state_dict_carries_the_held_errors_to_a_new_feedback():
    buffer, stream = Buffer(), LazyStream()
    fb = feedback(buffer, stream)
    fb.push(*update(0))
    state = fb.state_dict()
    assert state["td_error"].tolist() == update(0)[1].tolist()
    other_buffer = Buffer()
    other = feedback(other_buffer, LazyStream())
    other.load_state_dict(state)
    other.push(*update(1))
    assert len(other_buffer.calls) == 1
    np.testing.assert_array_equal(other_buffer.calls[0][0], update(0)[0])
    np.testing.assert_array_equal(other_buffer.calls[0][1], update(0)[1].numpy())
    other.load_state_dict(None)
    other.flush()
    assert len(other_buffer.calls) == 1 and feedback(Buffer(), LazyStream()).state_dict() is None


def test_errors_of_another_batch_size_are_written_at_once():
    buffer = Buffer()
    state = {"index": torch.arange(3), "td_error": torch.tensor([0.1, 0.2, 0.3])}
    feedback(buffer, LazyStream()).load_state_dict(state)
    assert len(buffer.calls) == 1 and buffer.calls[0][0].tolist() == [0, 1, 2]


@pytest.mark.cuda
def test_cuda_feedback_writes_the_device_errors_one_push_late():
    buffer = Buffer()
    fb = PriorityFeedback.for_device(buffer, B, "cuda")
    for i in range(3):
        index, td = update(i)
        fb.push(index, td.cuda())
        assert len(buffer.calls) == i
    fb.flush()
    for i, (index, priorities) in enumerate(buffer.calls):
        np.testing.assert_array_equal(index, update(i)[0])
        np.testing.assert_array_equal(priorities, update(i)[1].numpy())
