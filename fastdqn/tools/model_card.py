"""The model card (``README.md``) of an exported model folder: YAML metadata in the layout the
Hugging Face Hub reads for RL models (the one ``huggingface_sb3`` and CleanRL write: library
name, tags, a ``model-index`` whose ``mean_reward`` is "mean +/- std"), then Markdown saying
what the agent is, how it scored, how to evaluate it and the hyperparameters it was trained with.

The YAML is written here without a YAML library: every string is a JSON string, which YAML
reads as a double-quoted scalar, so env ids and values need no escaping rules of their own.
"""

from __future__ import annotations

import json

from fastdqn.run.config import TrainConfig

# Fields of config.json that describe the training machine or its outputs, not the agent.
_MACHINE_FIELDS = ("cuda", "replay_device", "torch_threads", "env_threads", "run_dir", "progress", "prefetch",
                   "track", "wandb_project_name", "wandb_entity")


def algorithm_name(config: TrainConfig) -> str:
    """"Double DQN" or "DQN", with the Rainbow parts the run used."""
    parts = [name for name, used in (("dueling", config.dueling), (f"{config.n_step}-step", config.n_step > 1),
                                     ("prioritized", config.prioritized)) if used]
    return ("Double DQN" if config.double_dqn else "DQN") + (f" ({', '.join(parts)})" if parts else "")


def model_card(config: TrainConfig, stats: dict, *, repo_id: str | None, folder: str, video: bool) -> str:
    """The card of a model trained with ``config`` whose evaluation gave ``stats`` (the JSON of
    ``fastdqn eval --json``); ``repo_id`` names the Hub repository in the download command,
    ``folder`` the local folder the commands read when there is none."""
    env_id = config.env_id
    protocol = stats.get("protocol", "cleanrl")
    algorithm = algorithm_name(config)
    name = f"{'double-dqn' if config.double_dqn else 'dqn'}-{env_id}"
    q = json.dumps
    value = f"{stats['mean']:.2f} +/- {stats['std']:.2f}"
    front = [
        "---",
        "library_name: fastdqn",
        "tags:",
        *(f"- {q(tag)}" for tag in (env_id, "deep-reinforcement-learning", "reinforcement-learning", "dqn",
                                    "custom-implementation")),
        "model-index:",
        f"- name: {q(name)}",
        "  results:",
        "  - task:",
        "      type: reinforcement-learning",
        "      name: reinforcement-learning",
        "    dataset:",
        f"      name: {q(env_id)}",
        f"      type: {q(env_id)}",
        "    metrics:",
        "    - type: mean_reward",
        f"      value: {q(value)}",
        "      name: mean_reward",
        "      args:",
        f"        protocol: {q(protocol)}",
        f"        episodes: {int(stats['episodes'])}",
        f"        epsilon: {float(stats['epsilon'])!r}",
        "      verified: false",
        "---",
    ]
    low, high = stats["mean_ci95"]
    download = (f"hf download {repo_id} --local-dir {repo_id.split('/')[-1]}\n" if repo_id else "")
    folder = repo_id.split("/")[-1] if repo_id else folder
    body = f"""
# {algorithm} playing {env_id}

A {algorithm} agent trained with fastdqn for {stats['global_step']:,} env steps on the EnvPool task
`{env_id}`. The folder holds its online Q-network (`model.safetensors`), the run's configuration
(`config.json`), its evaluation (`eval.json`){", a video of it playing (`replay.mp4`)" if video else ""}
and this card.

## Evaluation

{int(stats['episodes'])} full games, epsilon {stats['epsilon']:g}, evaluation protocol `{protocol}`, seed {stats.get('seed', 'not recorded')}:

| mean | std | median | min | max | mean's 95% CI |
|---:|---:|---:|---:|---:|---|
| {stats['mean']:.2f} | {stats['std']:.2f} | {stats['median']:.2f} | {stats['min']:.2f} | {stats['max']:.2f} | [{low:.2f}, {high:.2f}] |

## Use it

Loading the folder runs no code from it: the weights are a safetensors file and the
configuration JSON, both checked against the network before use.

```bash
pip install "fastdqn[hub]"
{download}fastdqn eval {folder} --episodes {int(stats['episodes'])} --epsilon {stats['epsilon']:g} --seed {stats.get('seed', 12345)}
```

With the same episodes, epsilon and seed this plays the same games and prints the scores above.

## Hyperparameters

| hyperparameter | value |
|---|---|
{_hyperparameter_rows(config)}
"""
    return "\n".join(front) + "\n" + body


def _hyperparameter_rows(config: TrainConfig) -> str:
    rows = []
    for key, value in config.to_dict().items():
        if key in _MACHINE_FIELDS:
            continue
        shown = ",".join(map(str, value)) if isinstance(value, list) else value
        rows.append(f"| `{key}` | `{shown}` |")
    return "\n".join(rows)
