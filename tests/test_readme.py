"""The README's and docs' promises about the command line, read from the files themselves.

The defaults table and the list of CleanRL flag names are parsed out of README.md, the
presets table out of docs/training.md, and compared with what ``fastdqn train`` resolves and
accepts, so the two cannot drift apart. Every flag named in the README or docs/ must exist,
every relative link must lead to a file and heading that exist, the test commands must be
the ones CI runs, and the Stable-Baselines3 example must name real classes and keywords.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from fastdqn.tools.cli import build_parser
from fastdqn.run.config import ATARI, VECTOR, make_config

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {path.name: path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}
TRAINING = DOCS["training.md"]


def _number(token: str) -> float:
    """'10M' -> 1e7, '100k' -> 1e5, '1,000' -> 1000, '1e-4' -> 1e-4, '10%' -> 0.1."""
    token = token.replace(",", "")
    scale = {"M": 1e6, "k": 1e3, "%": 1e-2}.get(token[-1], 1.0)
    return float(token[:-1] if scale != 1.0 else token) * scale


def _numbers(cell: str) -> list[float]:
    return [_number(t) for t in re.findall(r"\d[\d,.]*(?:e-?\d+)?[Mk%]?", cell)]


def _defaults_table() -> dict[str, tuple[str, str]]:
    start = README.index("| | Atari ids")
    rows = {}
    for line in README[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        _, name, atari, vector, _ = (cell.strip() for cell in line.split("|"))
        rows[name] = (atari, vector)
    return rows


TABLE = _defaults_table()


def _resolved(kind: str):
    return make_config(kind, {}, cuda_available=False, max_episode_steps=1000)


@pytest.mark.parametrize("column, kind", [(0, ATARI), (1, VECTOR)])
def test_documented_defaults_are_the_resolved_defaults(column, kind):
    c = _resolved(kind)
    cell = {name: cells[column] for name, cells in TABLE.items()}
    assert _numbers(cell["steps, envs"]) == [c.total_timesteps, c.num_envs]
    assert _numbers(cell["buffer, batch"]) == [c.buffer_size, c.batch_size]
    assert _numbers(cell["learning rate"])[0] == c.learning_rate
    assert ("decayed linearly to 0" in cell["learning rate"]) == c.anneal_lr
    assert _numbers(cell["learning starts"]) == [c.learning_starts]
    assert _numbers(cell["train / target frequency"]) == [c.train_frequency, c.target_network_frequency]
    start_e, end_e, fraction = _numbers(cell["epsilon"])
    assert (start_e, end_e) == (c.start_e, c.end_e) and fraction == pytest.approx(c.exploration_fraction)
    loss, double = (s.strip() for s in cell["loss, Double DQN"].split(",", 1))
    assert loss.split()[0] == c.loss and (double == "on") == c.double_dqn
    clipped = _numbers(loss)
    assert (clipped[0] if clipped else 0.0) == c.max_grad_norm
    compile_, threads = (s.strip() for s in cell["compile, torch threads"].split(","))
    assert (compile_ == "on") == c.compile
    assert c.torch_threads == (0 if threads == "torch's default" else int(threads))
    network = cell["network"]
    if kind == VECTOR:
        assert network == "MLP " + "-".join(map(str, c.hidden))
    else:
        assert network == "NatureCNN"


def _train_options(command: str = "train") -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return {opt for action in sub.choices[command]._actions for opt in action.option_strings}


@pytest.mark.parametrize("name", ["README.md", *DOCS])
def test_every_flag_the_docs_name_exists_exactly(name):
    # The sweep, plot, evaluation and export sections name those commands' flags too.
    options = (_train_options() | _train_options("sweep") | _train_options("plot") | _train_options("eval")
               | _train_options("export"))
    text = README if name == "README.md" else DOCS[name]
    named = set(re.findall(r"`(--[a-z][a-z0-9-]*)", text))
    # Flags of the other commands (and of pytest and bench/gpu_check.sh), named in their own sections.
    others = {"--episodes", "--json", "--epsilon", "--address", "--env-ids", "--seeds", "--sweep-dir",
              "--cpus-per-run", "--gpus-per-run", "--bench", "--device", "--quick", "--sections",
              "--repeats", "--benchmark-disable", "--smoke"}
    missing = sorted(flag for flag in named - others if flag not in options)
    assert not missing, f"{name} names flags `fastdqn train` does not have: {missing}"


def test_cleanrl_flag_list_is_accepted_by_train():
    start = README.index("Flags use CleanRL")
    paragraph = README[start:README.index("\n\n", start)]
    listed = re.findall(r"--[a-z][a-z0-9-]*(?:/--[a-z-]+)?", paragraph)
    flags = {f for item in listed for f in item.split("/")}
    assert {"--env-id", "--seed", "--total-timesteps", "--cuda", "--no-cuda"} <= flags
    assert flags <= _train_options(), sorted(flags - _train_options())


def test_rainbow_lite_presets_table_is_the_resolved_preset():
    from fastdqn.run.config import RAINBOW_LITE

    start = TRAINING.index("| | `double-dqn` (the default)")
    rows = {}
    for line in TRAINING[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in line.split("|")[1:-1]]
        rows[cells[0]] = cells[1:]
    for column, kind in ((1, ATARI), (2, VECTOR)):
        c = make_config(kind, {}, cuda_available=False, max_episode_steps=1000, preset=RAINBOW_LITE)
        assert _numbers(rows["targets"][column]) == [c.n_step] and c.double_dqn
        assert _numbers(rows["replay"][column]) == [c.per_alpha, c.per_beta_start, c.per_beta_end]
        assert c.prioritized and c.dueling and "dueling" in rows["network"][column]
        loss, eps = rows["loss, per-eps"][column].split(", ")
        assert (loss, float(eps)) == (c.loss, c.per_eps)
    atari = make_config(ATARI, {}, cuda_available=False, max_episode_steps=1000, preset=RAINBOW_LITE)
    assert _numbers(rows["Adam lr, eps"][1]) == [atari.learning_rate, atari.adam_eps]
    plain = _resolved(ATARI)
    assert _numbers(rows["Adam lr, eps"][0]) == [plain.learning_rate, plain.adam_eps]
    assert (plain.n_step, plain.prioritized, plain.dueling) == (1, False, False)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(text: str) -> set[str]:
    body = re.sub(r"```.*?```", "", text, flags=re.S)
    return {_slug(m) for m in re.findall(r"^#+ (.+)$", body, flags=re.M)}


@pytest.mark.parametrize("name", ["README.md", *DOCS])
def test_relative_links_lead_to_files_and_headings_that_exist(name):
    source = ROOT / name if name == "README.md" else ROOT / "docs" / name
    text = source.read_text()
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (source.parent / path).resolve() if path else source
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text()):
            broken.append(target)
    assert not broken, f"{name} links to missing files or headings: {broken}"


def _first_code_block(heading: str, language: str) -> str:
    """The first ```language block of the README after ``heading``, as it is written."""
    fence = f"```{language}\n"
    begin = README.index(fence, README.index(heading)) + len(fence)
    return README[begin:README.index("```", begin)]


def test_readme_test_commands_are_the_ones_ci_runs():
    commands = [line for line in _first_code_block("## Tests", "bash").splitlines() if line.strip()]
    assert len(commands) == 2 and "-m \"not slow\"" in commands[0] and commands[1].endswith("-m slow")
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci, f"README test command not in .ci/run: {command}"


def test_sb3_example_names_real_classes_and_keywords():
    """The example itself takes about a minute (an SB3 DQN on Atari; its time is in
    bench/RESULTS.md); here its names are checked: every import resolves, the ALE ids are
    registered with gymnasium, and the keywords it passes are ones DQN accepts."""
    pytest.importorskip("stable_baselines3")
    pytest.importorskip("ale_py")
    source = _first_code_block("## Stable-Baselines3", "python")
    assert "gymnasium.register_envs(ale_py)" in source
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)
    from stable_baselines3 import DQN

    accepted = set(inspect.signature(DQN).parameters)
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "DQN"]
    assert len(calls) == 1
    keywords = {k.arg for k in calls[0].keywords}
    assert "replay_buffer_class" in keywords and keywords <= accepted, sorted(keywords - accepted)
    assert any(isinstance(k.value, ast.Name) and k.value.id == "SB3ReplayBuffer" for k in calls[0].keywords)
