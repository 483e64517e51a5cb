"""The replay buffer's lock: mutual exclusion, first come first served, and no lost wake-up."""

import threading
import time

from fastdqn.replay.buffer import _TurnLock


def _wait_until(predicate, timeout=10.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.001)


def test_threads_that_ask_while_it_is_held_get_it_in_the_order_they_asked():
    lock, order = _TurnLock(), []
    lock.__enter__()

    def take(name):
        with lock:
            order.append(name)

    threads = []
    for i, name in enumerate("BCD"):
        threads.append(threading.Thread(target=take, args=(name,)))
        threads[-1].start()
        _wait_until(lambda: lock._waiting == i + 1)  # each one queued before the next asks
    order.append("A")
    lock.__exit__(None, None, None)
    for t in threads:
        t.join(10)
    assert order == ["A", "B", "C", "D"]


def test_no_two_holders_and_no_lost_wake_up_under_a_storm_of_short_holds():
    lock, counter, per_thread, n_threads = _TurnLock(), [0], 1500, 4
    inside = []

    def work():
        for _ in range(per_thread):
            with lock:
                inside.append(1)
                assert len(inside) == 1
                value = counter[0]
                if value % 97 == 0:
                    time.sleep(0)  # hand the GIL over while holding the lock
                counter[0] = value + 1
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), "a thread never got its turn"
    assert counter[0] == per_thread * n_threads
    assert lock._waiting == 0
