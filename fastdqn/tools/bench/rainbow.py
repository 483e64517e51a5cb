"""``fastdqn bench --sections rainbow``: the full trainer with n-step targets and prioritized
replay, and with a dueling network on top, beside plain Double DQN, their repeats taken in turn
from the same start past ``learning_starts``. The phase shares say where the extra time goes:
``sample`` (sum tree, n-step windows), ``priorities`` (the TD errors written back) and ``learn``.
"""

from __future__ import annotations

from fastdqn.tools.bench.harness import TrainerRuns, make_buffer, train_config
from fastdqn.tools.bench.measure import Figure, measure_interleaved, paired_ratio

N_STEP = 3
EPSILON = 0.05


def section_rainbow(ctx) -> list[Figure]:
    """Env steps/s of the trainer with --n-step 3 --prioritized --dueling against plain Double DQN."""
    from fastdqn.run.trainer import Trainer

    a, s = ctx.args, ctx.sizes
    compiled = not (a.no_compile or a.quick)
    fill = -(-s.learning_starts // a.num_envs) * a.num_envs  # env steps of random acting first
    per = dict(n_step=N_STEP, prioritized=True, per_alpha=0.5)
    options = {"plain": {}, "nstep_per": per, "all": dict(per, dueling=True)}
    runs = {}
    for name, extra in options.items():
        buffer, learner = make_buffer(ctx, **extra), ctx.learner(compiled, **extra)
        envs = ctx.make_envs()
        trainer = Trainer(envs, buffer, learner, train_config(ctx, total_timesteps=fill, start_e=1.0, end_e=1.0,
                                                              learning_starts=fill, **extra))
        trainer.train()
        envs.close()
        runs[name] = TrainerRuns(ctx, buffer, learner, s.train_steps, trainer.state_dict(),
                                 start_e=EPSILON, end_e=EPSILON, learning_starts=fill, **extra)
    stats = measure_interleaved({name: r.case() for name, r in runs.items()}, s.repeats)
    for r in runs.values():
        r.close()
    mode = "compiled" if compiled else "eager"

    def shares(name: str) -> str:
        return ", ".join(f"{k} {runs[name].share(k).median:.0%}" for k in ("sample", "learn", "priorities", "wait"))

    def against_plain(name: str, what: str) -> Figure:
        ratio = paired_ratio(stats[name], stats["plain"])
        return Figure.of(f"rainbow.{name}", "env steps/s", stats[name], ceiling=stats["plain"].median,
                         ceiling_name="plain (same run)",
                         note=f"{what}, {mode}; {shares(name)}; paired ratio {ratio.median:.2f} ±{ratio.spread:.2f}")

    return [
        Figure.of("rainbow.plain", "env steps/s", stats["plain"],
                  note=f"Double DQN, uniform replay, {mode}; {shares('plain')}"),
        against_plain("nstep_per", f"--n-step {N_STEP} --prioritized (the replay's cost)"),
        against_plain("all", f"--n-step {N_STEP} --prioritized --dueling (and the dueling head's)"),
    ]
