"""SB3ReplayBuffer with the real Stable-Baselines3, Gymnasium and ALE Atari envs.

Every check compares what the buffer returns with a stream recorded in the test: a sampled
transition must be one of the recorded ones, field by field, and the same one that SB3's own
``ReplayBuffer`` holds at that place. Skipped when the ``sb3`` extra is not installed.
"""

from __future__ import annotations

import hashlib
import pickle
import tracemalloc

import numpy as np
import pytest

pytest.importorskip("stable_baselines3")
ale_py = pytest.importorskip("ale_py")
pytest.importorskip("cv2")

import gymnasium as gym  # noqa: E402
import torch  # noqa: E402
from gymnasium import spaces  # noqa: E402
from stable_baselines3 import DQN  # noqa: E402
from stable_baselines3.common.atari_wrappers import (  # noqa: E402
    ClipRewardEnv, EpisodicLifeEnv, FireResetEnv, MaxAndSkipEnv, NoopResetEnv)
from stable_baselines3.common.buffers import ReplayBuffer as SB3Buffer  # noqa: E402

from fastdqn.errors import ReplayError  # noqa: E402
from fastdqn.integrations.sb3 import SB3ReplayBuffer, detect_frame_stack  # noqa: E402
from fastdqn.integrations.sb3_stream import atari_vec_env, record_sb3_stream  # noqa: E402

gym.register_envs(ale_py)

ENV_ID = "BreakoutNoFrameskip-v4"
STACK = (4, 84, 84)


@pytest.fixture(scope="module")
def sb3_stream() -> list[dict]:
    """Random play on 2 envs, episodes capped at 600 frames: resets, life losses, truncations."""
    env = atari_vec_env(ENV_ID, n_envs=2, seed=0, max_frames=600)
    stream = record_sb3_stream(env, np.random.default_rng(0).integers(0, 4, (500, 2)))
    env.close()
    return stream


def truncated_flags(step) -> np.ndarray:
    return np.array([bool(i.get("TimeLimit.truncated", False)) for i in step["infos"]])


def key(obs, action) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(obs).tobytes() + int(action).to_bytes(8, "little"),
                           digest_size=16).digest()


def index_stream(stream, first_step: int = 0) -> dict:
    """(obs, action) -> every (t, env) of the stream from ``first_step`` with that pair."""
    table = {}
    for t in range(first_step, len(stream)):
        for e in range(len(stream[t]["action"])):
            table.setdefault(key(stream[t]["obs"][e], stream[t]["action"][e]), []).append((t, e))
    return table


def add_all(buffer, stream) -> None:
    for s in stream:
        buffer.add(s["obs"], s["next_obs"], s["action"], s["reward"], s["done"], s["infos"])


def as_numpy(samples) -> dict:
    return dict(obs=samples.observations.numpy(), action=samples.actions.numpy()[:, 0],
                next_obs=samples.next_observations.numpy(), done=samples.dones.numpy()[:, 0],
                reward=samples.rewards.numpy()[:, 0])


def test_stream_has_resets_life_losses_and_truncations(sb3_stream):
    done = np.array([s["done"] for s in sb3_stream])
    trunc = np.array([truncated_flags(s) for s in sb3_stream])
    over = np.array([["episode" in i and not i.get("TimeLimit.truncated", False) for i in s["infos"]]
                     for s in sb3_stream])
    assert trunc.sum() >= 2 and over.sum() >= 1 and (done & ~trunc & ~over).sum() >= 5


def sb3_at(buffer, row: int, env: int) -> dict:
    """SB3's transition at ``(row, env)``: its ``_get_samples`` draws the env with NumPy's
    global generator, so seed that to a value whose first draw is ``env``."""
    seed = next(s for s in range(100) if np.random.RandomState(s).randint(0, buffer.n_envs, size=1)[0] == env)
    np.random.seed(seed)
    got = as_numpy(buffer._get_samples(np.array([row])))
    return {field: value[0] for field, value in got.items()}


def recorded(stream, t: int, e: int, handle_timeouts: bool = True) -> dict:
    step = stream[t]
    done = bool(step["done"][e]) and not (handle_timeouts and truncated_flags(step)[e])
    return dict(obs=step["obs"][e], action=step["action"][e], next_obs=step["next_obs"][e],
                done=float(done), reward=step["reward"][e])


def same(a: dict, b: dict) -> bool:
    return all(np.array_equal(a[field], b[field]) for field in a)


def test_same_transitions_as_sb3_at_the_same_place(sb3_stream):
    n_envs, rows, capacity = 2, 150, 300  # the stream (500 rows) wraps both rings
    space = spaces.Box(0, 255, STACK, np.uint8)
    theirs = SB3Buffer(capacity, space, spaces.Discrete(4), device="cpu", n_envs=n_envs)
    ours = SB3ReplayBuffer(capacity, space, spaces.Discrete(4), device="cpu", n_envs=n_envs, seed=1,
                          frame_stack=4)
    add_all(theirs, sb3_stream)
    add_all(ours, sb3_stream)
    assert (ours.pos, ours.full, ours.buffer_size) == (theirs.pos, theirs.full, theirs.buffer_size)
    for a, b in zip(ours.sample(8), theirs.sample(8)):  # SB3's shapes, dtypes and device
        assert (a is None) == (b is None)
        if a is not None:
            assert (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)

    T = len(sb3_stream)
    window = index_stream(sb3_stream, T - rows)  # the rows SB3 still holds
    seen = set()
    for _ in range(40):
        got = as_numpy(ours.sample(64))
        for b in range(64):
            row = {field: value[b] for field, value in got.items()}
            places = [(t, e) for t, e in window.get(key(row["obs"], row["action"]), [])
                      if same(row, recorded(sb3_stream, t, e))]
            assert places, "sampled a transition that is not among the newest recorded rows"
            t, e = places[0]
            # SB3's own buffer holds the same transition at row t % rows of env e.
            assert same(row, sb3_at(theirs, t % rows, e))
            seen.add((t, e))
    # Transitions across resets, life losses and truncations were all sampled.
    assert len(seen) >= 0.9 * len(ours)
    assert len(ours) >= 0.9 * capacity


def test_breakout_storage_equals_sb3s_row_for_row(sb3_stream):
    """SB3's Atari env (AtariWrapper, VecFrameStack(4)), rings wrapped: every row the frame ring
    holds equals SB3's storage at that row and env, and it holds all but a few of the oldest."""
    rows = 150
    space = spaces.Box(0, 255, STACK, np.uint8)
    theirs = SB3Buffer(2 * rows, space, spaces.Discrete(4), device="cpu", n_envs=2)
    ours = SB3ReplayBuffer(2 * rows, space, spaces.Discrete(4), device="cpu", n_envs=2, seed=0, frame_stack=4)
    add_all(theirs, sb3_stream)
    add_all(ours, sb3_stream)
    got = {f: getattr(ours, f) for f in ("observations", "next_observations", "actions", "rewards")}
    for f in ("dones", "timeouts"):
        assert np.array_equal(getattr(ours, f), getattr(theirs, f)), f
    held = 0
    for p in range(rows):
        for e in range(2):
            if got["observations"][p, e].any():
                assert all(np.array_equal(got[f][p, e], getattr(theirs, f)[p, e]) for f in got), (p, e)
                held += 1
    # A stack that starts over ([0, 0, 0, f]) takes two slots more than one that continues.
    starts = int(np.sum([s["done"] for s in sb3_stream[-rows:]]))
    assert 2 * rows > held >= 2 * rows - 2 * starts - 2


def test_sb3_optimize_memory_usage_returns_wrong_transitions(sb3_stream):
    """SB3's optimize_memory_usage=True reads next_obs from the next row, which holds the
    reset observation after every episode end; ours returns each row as it was added."""
    rows = 150
    space = spaces.Box(0, 255, STACK, np.uint8)
    theirs = SB3Buffer(2 * rows, space, spaces.Discrete(4), device="cpu", n_envs=2,
                       optimize_memory_usage=True, handle_timeout_termination=False)
    add_all(theirs, sb3_stream)
    T = len(sb3_stream)
    wrong = total = 0
    for p in range(rows):
        if p == theirs.pos:
            continue  # SB3 never samples its write position
        t = T - 1 - ((T - 1 - p) % rows)
        for e in range(2):
            total += 1
            wrong += not same(sb3_at(theirs, p, e), recorded(sb3_stream, t, e, handle_timeouts=False))
    assert 0 < wrong < total


@pytest.fixture
def one_torch_thread():
    """Two threads on a busy 2-core machine make each update many times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_sb3_dqn_trains_and_round_trips_its_buffer(tmp_path, one_torch_thread):
    env = atari_vec_env(ENV_ID, n_envs=2, seed=0)
    model = DQN("CnnPolicy", env, buffer_size=4000, learning_starts=1000, batch_size=32, train_freq=16,
                target_update_interval=200, exploration_initial_eps=1.0, exploration_final_eps=1.0,
                replay_buffer_class=SB3ReplayBuffer, replay_buffer_kwargs=dict(frame_stack=4), device="cpu",
                seed=0)
    params = [p.detach().clone() for p in model.q_net.parameters()]
    model.learn(total_timesteps=2000)
    rb = model.replay_buffer
    assert isinstance(rb, SB3ReplayBuffer) and rb.frame_stack == 4
    steps = model.num_timesteps  # SB3 collects train_freq vector steps at a time
    assert len(rb) == steps >= 2000 and rb.size() == rb.pos == steps // 2 and not rb.full
    assert any(not torch.equal(a, b) for a, b in zip(params, model.q_net.parameters()))

    model.save_replay_buffer(tmp_path / "replay.pkl")
    expected = [as_numpy(rb.sample(32)) for _ in range(3)]
    # The file is the frame buffer, not two full stacks per transition.
    assert (tmp_path / "replay.pkl").stat().st_size < 4000 * 7_200
    model.load_replay_buffer(tmp_path / "replay.pkl")
    loaded = model.replay_buffer
    assert loaded is not rb and (len(loaded), loaded.pos, loaded.full) == (steps, steps // 2, False)
    for want in expected:  # sampling goes on where the saved buffer's generator was
        got = as_numpy(loaded.sample(32))
        for field in want:
            assert np.array_equal(got[field], want[field]), field
    model.learn(total_timesteps=200, reset_num_timesteps=False)
    assert len(model.replay_buffer) == model.num_timesteps > steps
    env.close()


def test_pickle_streams_frames_without_a_second_copy(tmp_path):
    capacity = 20_000  # about 140 MB of frames
    ours = SB3ReplayBuffer(capacity, spaces.Box(0, 255, STACK, np.uint8), spaces.Discrete(4),
                           device="cpu", n_envs=1, seed=0, frame_stack=4)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (capacity // 4 + 4, 84, 84), dtype=np.uint8)
    frames[:, 0, 0], frames[:, 0, 1] = np.arange(len(frames)) % 256, np.arange(len(frames)) // 256
    for t in range(capacity // 4):
        ours.add(frames[t:t + 4][None], frames[t + 1:t + 5][None], np.array([t % 4]),
                 np.array([1.0], np.float32), np.array([False]), [{}])
    path = tmp_path / "rb.pkl"
    tracemalloc.start()
    with open(path, "wb") as f:
        pickle.dump(ours, f, protocol=pickle.HIGHEST_PROTOCOL)
    _, dump_peak = tracemalloc.get_traced_memory()
    tracemalloc.reset_peak()
    with open(path, "rb") as f:
        loaded = pickle.load(f)
    _, load_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert dump_peak < 0.05 * ours.nbytes
    assert load_peak < 1.3 * ours.nbytes
    got = as_numpy(loaded.sample(16))
    for b in range(16):
        t = int(got["obs"][b][0, 0, 0]) + 256 * int(got["obs"][b][0, 0, 1])
        assert np.array_equal(got["obs"][b], frames[t:t + 4]) and got["action"][b] == t % 4
        assert np.array_equal(got["next_obs"][b], frames[t + 1:t + 5])
    # Older protocols cannot stream; they still round-trip.
    again = pickle.loads(pickle.dumps(loaded, protocol=4))
    assert len(again) == len(ours)


# -- CleanRL ----------------------------------------------------------------------------

def cleanrl_env(seed: int, max_frames: int):
    """CleanRL dqn_atari.py's make_env, with Gymnasium 1.x wrapper names."""
    def thunk():
        env = gym.make(ENV_ID, max_episode_steps=max_frames)
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = NoopResetEnv(env, noop_max=30)
        env = MaxAndSkipEnv(env, skip=4)
        env = EpisodicLifeEnv(env)
        env = FireResetEnv(env)
        env = ClipRewardEnv(env)
        env = gym.wrappers.ResizeObservation(env, (84, 84))
        env = gym.wrappers.GrayscaleObservation(env)
        env = gym.wrappers.FrameStackObservation(env, 4)
        env.action_space.seed(seed)
        return env
    return thunk


class QNetwork(torch.nn.Module):
    def __init__(self, n_actions: int):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 8, stride=8), torch.nn.ReLU(),
                                       torch.nn.Flatten(), torch.nn.Linear(8 * 10 * 10, n_actions))

    def forward(self, x):
        return self.net(x / 255.0)


@pytest.mark.parametrize("mode", ["same_step", "next_step"])
def test_cleanrl_loop(mode, one_torch_thread):
    """dqn_atari.py's loop with ``from fastdqn.integrations.sb3 import SB3ReplayBuffer as
    ReplayBuffer``. Same-step auto-reset (Gymnasium < 1.0, what CleanRL targets): terminated
    rows carry the reset observation. Next-step (Gymnasium >= 1.0): the step after an episode
    end maps the final observation to the reset one and is not a transition."""
    ReplayBuffer = SB3ReplayBuffer
    autoreset = gym.vector.AutoresetMode.SAME_STEP if mode == "same_step" else gym.vector.AutoresetMode.NEXT_STEP
    envs = gym.vector.SyncVectorEnv([cleanrl_env(0, max_frames=400)], autoreset_mode=autoreset)
    q_network = QNetwork(envs.single_action_space.n)
    optimizer = torch.optim.Adam(q_network.parameters(), lr=1e-3)
    target_network = QNetwork(envs.single_action_space.n)
    target_network.load_state_dict(q_network.state_dict())
    rb = ReplayBuffer(1000, envs.single_observation_space, envs.single_action_space, "cpu",
                      optimize_memory_usage=True, handle_timeout_termination=False, frame_stack=4)
    obs, _ = envs.reset(seed=0)
    recorded, pseudo, ended = [], [], False
    for global_step in range(500):
        actions = np.array([envs.single_action_space.sample()])
        next_obs, rewards, terminations, truncations, infos = envs.step(actions)
        real_next_obs = next_obs.copy()
        for idx, trunc in enumerate(truncations):
            if trunc and mode == "same_step":
                real_next_obs[idx] = infos["final_obs"][idx]
        rb.add(obs, real_next_obs, actions, rewards, terminations, infos)
        row = dict(obs=obs[0].copy(), next_obs=real_next_obs[0].copy(), action=int(actions[0]),
                   reward=float(rewards[0]), term=bool(terminations[0]), trunc=bool(truncations[0]))
        if mode == "next_step" and ended:
            pseudo.append(row)
        else:
            recorded.append(row)
        ended = bool(terminations[0] or truncations[0])
        obs = next_obs
        if global_step > 380 and global_step % 4 == 0:
            data = rb.sample(32)
            with torch.no_grad():
                target_max, _ = target_network(data.next_observations).max(dim=1)
                td_target = data.rewards.flatten() + 0.99 * target_max * (1 - data.dones.flatten())
            old_val = q_network(data.observations).gather(1, data.actions).squeeze()
            loss = torch.nn.functional.mse_loss(td_target, old_val)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            assert torch.isfinite(loss)
    envs.close()
    assert sum(r["term"] for r in recorded) >= 3 and sum(r["trunc"] for r in recorded) >= 1
    if mode == "next_step":
        assert rb.skipped_rows == len(pseudo) >= 4
    by_key = {}
    for r in recorded:
        by_key.setdefault(key(r["obs"], r["action"]), []).append(r)
    for _ in range(30):
        got = as_numpy(rb.sample(32))
        for b in range(32):
            row = {field: value[b] for field, value in got.items()}
            # A stack can recur with another outcome (hidden ball state): any match will do.
            assert any(same(row, cleanrl_expected(r)) for r in by_key.get(key(row["obs"], row["action"]), [])), \
                "sampled a row that is not a recorded transition"


def cleanrl_expected(r: dict) -> dict:
    """What the buffer returns for a recorded CleanRL row."""
    next_obs = r["next_obs"]
    if r["term"] and not np.array_equal(next_obs[:-1], r["obs"][1:]):
        # A reset observation in place of the final one: stored as obs shifted by one frame
        # with its last frame repeated; the target does not read it (done = 1).
        next_obs = np.concatenate([r["obs"][1:], r["obs"][-1:]])
    return dict(obs=r["obs"], action=r["action"], next_obs=next_obs, done=float(r["term"]),
                reward=np.float32(r["reward"]))


# -- construction and bad input ----------------------------------------------------------

def test_frame_stack_detection():
    box = lambda shape, dtype=np.uint8: spaces.Box(0, 255, shape, dtype)  # noqa: E731
    assert detect_frame_stack(box((4, 84, 84))) == 4
    assert detect_frame_stack(box((2, 64, 64))) == 2
    assert detect_frame_stack(box((3, 84, 84))) == 1      # one RGB image
    assert detect_frame_stack(box((84, 84, 4))) == 1      # channel-last: stored as is
    assert detect_frame_stack(box((4, 84, 84), np.float32)) == 1
    assert detect_frame_stack(spaces.Box(-1, 1, (4,), np.float32)) == 1


def test_vector_observations_are_stored_as_they_are():
    space = spaces.Box(-5, 5, (4,), np.float32)
    rb = SB3ReplayBuffer(100, space, spaces.Discrete(2), device="cpu", n_envs=2, seed=0)
    obs = np.arange(8, dtype=np.float32).reshape(2, 4)
    rb.add(obs, obs + 100, np.array([0, 1]), np.array([1.0, 2.0]), np.array([False, True]),
           [{}, {"TimeLimit.truncated": True}])
    got = as_numpy(rb.sample(64))
    for b in range(64):
        e = int(got["obs"][b][0]) // 4
        assert np.array_equal(got["obs"][b], obs[e]) and np.array_equal(got["next_obs"][b], obs[e] + 100)
        assert got["action"][b] == e and got["reward"][b] == e + 1 and got["done"][b] == 0.0


def test_pos_full_size_and_reset_count_as_sb3_does():
    space, actions = spaces.Box(-5, 5, (3,), np.float32), spaces.Discrete(2)
    ours = SB3ReplayBuffer(10, space, actions, device="cpu", n_envs=2, seed=0)
    theirs = SB3Buffer(10, space, actions, device="cpu", n_envs=2)
    for t in range(8):
        obs = np.full((2, 3), t, np.float32)
        for rb in (ours, theirs):
            rb.add(obs, obs + 1, np.array([0, 1]), np.zeros(2, np.float32), np.array([False, False]), [{}, {}])
            assert (rb.pos, rb.full) == ((t + 1) % 5, t >= 4)
    assert ours.size() == theirs.size() == 5 and len(ours) == 10
    got = as_numpy(ours.sample(200))
    assert set(got["obs"][:, 0].tolist()) == {3.0, 4.0, 5.0, 6.0, 7.0}  # the newest 5 per env
    ours.reset()
    assert (len(ours), ours.size(), ours.pos, ours.full) == (0, 0, 0, False)
    ours.add(np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32), np.array([1, 0]),
             np.ones(2, np.float32), np.array([True, False]), [{}, {}])
    got = as_numpy(ours.sample(64))
    assert set(got["done"].tolist()) == {0.0, 1.0} and np.array_equal(got["done"], got["action"])  # env 0: action 1, done


def test_bad_input_is_refused():
    stack = spaces.Box(0, 255, STACK, np.uint8)
    with pytest.raises(ReplayError, match="action_space"):
        SB3ReplayBuffer(100, stack, spaces.Box(-1, 1, (2,)), device="cpu")
    with pytest.raises(ReplayError, match="observation_space"):
        SB3ReplayBuffer(100, spaces.Dict({"a": stack}), spaces.Discrete(4), device="cpu")
    rb = SB3ReplayBuffer(100, stack, spaces.Discrete(4), device="cpu", seed=0, frame_stack=4)
    rng = np.random.default_rng(0)
    obs, other = rng.integers(0, 255, (2, 1, *STACK), dtype=np.uint8)
    with pytest.raises(ReplayError, match="truncation"):  # bootstraps from a wrong stack
        rb.add(obs, other, np.array([0]), np.array([0.0]), np.array([True]), [{"TimeLimit.truncated": True}])
    with pytest.raises(ReplayError, match="leave frame_stack out"):  # not frame stacks at all
        rb.add(obs, other, np.array([0]), np.array([0.0]), np.array([False]), [{}])
    assert len(rb) == 0 and rb.pos == 0


@pytest.mark.cuda
def test_cuda_samples_equal_cpu_samples():
    space = spaces.Box(0, 255, STACK, np.uint8)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (60, 84, 84), dtype=np.uint8)
    bufs = [SB3ReplayBuffer(200, space, spaces.Discrete(4), device=d, seed=3, frame_stack=4)
            for d in ("cpu", "cuda")]
    for t in range(50):
        for rb in bufs:
            rb.add(frames[t:t + 4][None], frames[t + 1:t + 5][None], np.array([t % 4]),
                   np.array([float(t)], np.float32), np.array([t % 7 == 0]), [{}])
    for _ in range(3):
        cpu, gpu = (rb.sample(32) for rb in bufs)
        for a, b in zip(cpu, gpu):
            if a is not None:
                assert b.device.type == "cuda" and torch.equal(a, b.cpu())


def sampled_rows(rb, batch_size: int = 256) -> list[tuple]:
    data = rb.sample(batch_size)
    return [tuple(np.asarray(x[i]).tobytes() for x in (data.observations, data.actions, data.next_observations,
                                                          data.rewards, data.dones)) for i in range(batch_size)]


@pytest.mark.parametrize("space", [spaces.Discrete(5), spaces.MultiDiscrete([3, 4]), spaces.MultiBinary(6),
                                   spaces.MultiBinary([2, 3])], ids=lambda s: type(s).__name__)
def test_discrete_and_binary_observation_spaces_are_stored_as_sb3_does(space):
    """SB3 stores these spaces as arrays of ``obs_shape`` in the space's dtype; so does the buffer,
    and every sampled row is one that was added, field by field, in SB3's dtypes."""
    space.seed(0)
    theirs = SB3Buffer(100, space, spaces.Discrete(3), device="cpu", n_envs=2)
    ours = SB3ReplayBuffer(100, space, spaces.Discrete(3), device="cpu", n_envs=2, seed=0)
    rng = np.random.default_rng(0)
    obs = np.array([space.sample() for _ in range(2)])
    for t in range(40):
        next_obs = np.array([space.sample() for _ in range(2)])
        step = (obs, next_obs, rng.integers(0, 3, 2), rng.random(2).astype(np.float32), rng.random(2) < 0.2,
                [{}, {}])
        theirs.add(*step)
        ours.add(*step)
        obs = next_obs
    ref = theirs.sample(64)
    got = ours.sample(64)
    for a, b in zip(got, ref):
        if b is not None:
            assert (a.dtype, a.shape) == (b.dtype, b.shape)
    want = {(theirs.observations[t, i].tobytes(), theirs.actions[t, i].astype(np.int64).tobytes(),
             theirs.next_observations[t, i].tobytes(), theirs.rewards[t, i].tobytes(),
             theirs.dones[t, i].astype(np.float32).tobytes()) for t in range(40) for i in range(2)}
    got_rows = sampled_rows(ours)
    assert set(got_rows) <= want and len(set(got_rows)) > 20


def test_image_like_observations_that_are_not_stacks_are_stored_whole():
    """A (4, 84, 84) uint8 space whose observations are not frame stacks (SB3's image-like test
    envs): without ``frame_stack`` the buffer stores whole observations and never refuses a row."""
    space = spaces.Box(0, 255, STACK, np.uint8)
    rb = SB3ReplayBuffer(200, space, spaces.Discrete(2), device="cpu", n_envs=2, seed=0)
    rng = np.random.default_rng(0)
    rows = set()
    obs = rng.integers(0, 255, (2, *STACK), dtype=np.uint8)
    for t in range(30):
        next_obs = rng.integers(0, 255, (2, *STACK), dtype=np.uint8)
        action, reward = rng.integers(0, 2, 2), rng.random(2).astype(np.float32)
        rb.add(obs, next_obs, action, reward, np.zeros(2, bool), [{}, {}])
        rows |= {(obs[i].tobytes(), action[i].astype(np.int64).tobytes(), next_obs[i].tobytes(),
                  reward[i].tobytes(), np.float32(0).tobytes()) for i in range(2)}
        obs = next_obs
    assert rb.frame_stack == 1 and len(rb) == 60
    assert set(sampled_rows(rb)) <= rows


def test_observations_keep_the_space_dtype():
    """uint8 observations added to a float32 space come back float32, as SB3 casts them."""
    space = spaces.Box(0, 255, (3, 8, 8), np.float32)
    theirs = SB3Buffer(50, space, spaces.Discrete(2), device="cpu")
    ours = SB3ReplayBuffer(50, space, spaces.Discrete(2), device="cpu", seed=0)
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, next_obs = rng.integers(0, 255, (2, 1, 3, 8, 8), dtype=np.uint8)
        for rb in (theirs, ours):
            rb.add(obs, next_obs, np.array([1]), np.array([1.0]), np.array([False]), [{}])
    got, ref = ours.sample(4), theirs.sample(4)
    assert got.observations.dtype == ref.observations.dtype == torch.float32
    assert got.next_observations.dtype == torch.float32


def nstep_reference(reward, terminated, truncated, n: int, gamma: float):
    """Plain NumPy: for each step t of one env, the n-step return, the steps m in its window
    (up to n, ending at the first termination or truncation) and whether it terminated."""
    T = len(reward)
    ret, steps, term = np.zeros(T), np.zeros(T, np.int64), np.zeros(T, bool)
    for t in range(T):
        for i in range(n):
            if t + i >= T:
                steps[t] = -1  # the window is still open at the end of the stream
                break
            ret[t] += gamma ** i * reward[t + i]
            steps[t] = i + 1
            if terminated[t + i] or truncated[t + i]:
                term[t] = terminated[t + i]
                break
    return ret, steps, term


def test_n_step_returns_match_a_numpy_reference_and_sb3():
    """``replay_buffer_kwargs=dict(n_steps=3, gamma=0.9)``: each sampled transition (its obs
    encodes its step) carries the n-step return, ``discounts = gamma**m`` and ``dones`` of the
    reference above, and of SB3's ``NStepReplayBuffer`` at the same step."""
    from stable_baselines3.common.buffers import NStepReplayBuffer

    n, gamma, T = 3, 0.9, 60
    space = spaces.Box(-1e6, 1e6, (2,), np.float32)
    ours = SB3ReplayBuffer(200, space, spaces.Discrete(2), device="cpu", seed=0, n_steps=n, gamma=gamma)
    theirs = NStepReplayBuffer(200, space, spaces.Discrete(2), device="cpu", n_steps=n, gamma=gamma)
    rng = np.random.default_rng(0)
    reward = rng.normal(size=T).astype(np.float32)
    terminated, truncated = rng.random(T) < 0.1, rng.random(T) < 0.08
    truncated &= ~terminated
    for t in range(T):
        obs = np.array([[t, 0]], np.float32)
        next_obs = np.array([[t + 1, 0]] if not (terminated[t] or truncated[t]) else [[t + 1, 1]], np.float32)
        step = (obs, next_obs, np.array([t % 2]), reward[t:t + 1], np.array([terminated[t] or truncated[t]]),
                [{"TimeLimit.truncated": bool(truncated[t])}])
        ours.add(*step)
        theirs.add(*step)
    ret, steps, term = nstep_reference(reward, terminated, truncated, n, gamma)
    data = ours.sample(400)
    seen = set()
    for i in range(400):
        t = int(data.observations[i, 0])
        seen.add(t)
        m = steps[t]
        assert m > 0  # open windows are not sampled
        assert data.rewards[i, 0].item() == pytest.approx(ret[t], rel=1e-5, abs=1e-5)
        assert data.dones[i, 0].item() == float(term[t])
        assert data.next_observations[i, 0].item() == t + m
        if not term[t]:
            assert data.discounts[i, 0].item() == pytest.approx(gamma ** m)
        ref = theirs._get_samples(np.array([t]))
        assert data.rewards[i, 0].item() == pytest.approx(ref.rewards[0, 0].item(), rel=1e-5, abs=1e-5)
        assert data.dones[i, 0].item() == ref.dones[0, 0].item()
        assert torch.equal(data.next_observations[i], ref.next_observations[0])
        if not term[t]:
            assert data.discounts[i, 0].item() == pytest.approx(ref.discounts[0, 0].item())
    assert seen == set(np.flatnonzero(steps > 0).tolist())


def test_n_step_returns_under_vec_normalize_normalise_each_step_as_sb3_does():
    """With ``VecNormalize`` SB3 normalises (and clips) each one-step reward, then sums the
    window: with a clip that bites, that differs from normalising the summed return."""
    from stable_baselines3.common.buffers import NStepReplayBuffer
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    n, gamma, T, clip = 3, 0.9, 60, 0.8
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("CartPole-v1")]), norm_obs=False, clip_reward=clip)
    venv.ret_rms.var = np.array(4.0)
    scale = np.sqrt(4.0 + venv.epsilon)
    space = spaces.Box(-1e6, 1e6, (2,), np.float32)
    ours = SB3ReplayBuffer(200, space, spaces.Discrete(2), device="cpu", seed=0, n_steps=n, gamma=gamma)
    theirs = NStepReplayBuffer(200, space, spaces.Discrete(2), device="cpu", n_steps=n, gamma=gamma)
    rng = np.random.default_rng(1)
    reward = (3 * rng.normal(size=T)).astype(np.float32)
    terminated, truncated = rng.random(T) < 0.1, rng.random(T) < 0.08
    truncated &= ~terminated
    for t in range(T):
        obs = np.array([[t, 0]], np.float32)
        next_obs = np.array([[t + 1, 0]], np.float32)
        step = (obs, next_obs, np.array([t % 2]), reward[t:t + 1], np.array([terminated[t] or truncated[t]]),
                [{"TimeLimit.truncated": bool(truncated[t])}])
        ours.add(*step)
        theirs.add(*step)
    clipped = np.clip(reward / scale, -clip, clip)
    want, steps, _ = nstep_reference(clipped, terminated, truncated, n, gamma)
    unclipped, _, _ = nstep_reference(reward, terminated, truncated, n, gamma)
    assert np.abs(want - np.clip(unclipped / scale, -clip, clip)).max() > 0.1  # the clip matters here
    data = ours.sample(300, env=venv)
    seen = set()
    for i in range(300):
        t = int(data.observations[i, 0])
        seen.add(t)
        assert data.rewards[i, 0].item() == pytest.approx(want[t], rel=1e-5, abs=1e-5)
        ref = theirs._get_samples(np.array([t]), env=venv)
        assert data.rewards[i, 0].item() == pytest.approx(ref.rewards[0, 0].item(), rel=1e-6, abs=1e-6)
    assert seen == set(np.flatnonzero(steps > 0).tolist())
    venv.close()
