"""fastdqn export: the model folder's files, its card's YAML and numbers, the exact export -> eval
round trip, the upload call (checked with HfApi's methods replaced: there is no network here),
and every refusal (bad input, and folders whose files are links, foreign tensors or too large).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

pytest.importorskip("safetensors")
yaml = pytest.importorskip("yaml")

from fastdqn.run.build import build_learner  # noqa: E402
from fastdqn.run.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from fastdqn.run.config import TrainConfig  # noqa: E402
from fastdqn.run.envs import env_info  # noqa: E402
from fastdqn.tools.cli import main  # noqa: E402

from checkpoint_doc import document  # noqa: E402
from cli_errors import fails  # noqa: E402

EVAL = ["--episodes", "6", "--num-envs", "3", "--seed", "321", "--no-cuda"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A CartPole run folder at step 4,000 whose network is a seeded random MLP (no training:
    the round trip needs a network that plays, not one that plays well)."""
    config = TrainConfig(env_id="CartPole-v1", compile=False, hidden=(16, 8), batch_size=32, learning_starts=32,
                         buffer_size=1000, max_episode_steps=500)
    torch.manual_seed(5)
    learner = build_learner(config, env_info("CartPole-v1"))
    with torch.no_grad():
        for p in learner.online.parameters():
            p.normal_(0, 1)
    run = tmp_path_factory.mktemp("runs") / "cartpole"
    run.mkdir()
    save_checkpoint(run, {**document(4000, compile=False, hidden=(16, 8), batch_size=32, learning_starts=32,
                                     buffer_size=1000, max_episode_steps=500),
                          "learner": learner.state_dict()})
    return run


@pytest.fixture(scope="module")
def exported(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("exports") / "dqn-CartPole-v1"
    assert main(["export", str(run_dir), str(out), *EVAL]) == 0
    return out


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _eval_json(path, capsys, *extra) -> dict:
    capsys.readouterr()
    assert main(["eval", str(path), *EVAL, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_folder_holds_the_hub_layout(exported):
    assert sorted(p.name for p in exported.iterdir()) == ["README.md", "config.json", "eval.json",
                                                          "model.safetensors"]


def test_weights_are_the_online_network_in_safetensors(run_dir, exported):
    from safetensors import safe_open

    online = load_checkpoint(run_dir)["learner"]["online"]
    with safe_open(exported / "model.safetensors", framework="pt") as f:
        assert sorted(f.keys()) == sorted(online)
        for name, value in online.items():
            assert torch.equal(f.get_tensor(name), value), name
        assert f.metadata()["global_step"] == "4000" and f.metadata()["env_id"] == "CartPole-v1"
    config = json.loads((exported / "config.json").read_text())
    assert config["hidden"] == [16, 8] and config["env_id"] == "CartPole-v1"
    assert config["run_dir"] == ""  # a local path stays out of a folder meant for sharing


def test_eval_of_the_folder_equals_eval_of_the_run(run_dir, exported, capsys):
    from_run = _eval_json(run_dir, capsys)
    from_folder = _eval_json(exported, capsys)
    assert from_folder == from_run
    assert len(from_run["scores"]) == 6 and from_run["global_step"] == 4000
    # And the export's own evaluation is that same evaluation.
    assert json.loads((exported / "eval.json").read_text()) == from_run


def test_model_card_yaml_and_numbers(exported):
    text = (exported / "README.md").read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front, body = text[4:].split("\n---\n", 1)
    meta = yaml.safe_load(front)
    scores = np.array(json.loads((exported / "eval.json").read_text())["scores"])
    assert meta["library_name"] == "fastdqn"
    assert meta["tags"] == ["CartPole-v1", "deep-reinforcement-learning", "reinforcement-learning", "dqn",
                            "custom-implementation"]
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert result["task"] == {"type": "reinforcement-learning", "name": "reinforcement-learning"}
    assert result["dataset"] == {"name": "CartPole-v1", "type": "CartPole-v1"}
    (metric,) = result["metrics"]
    assert metric["type"] == "mean_reward" and metric["name"] == "mean_reward"
    assert metric["value"] == f"{scores.mean():.2f} +/- {scores.std():.2f}"
    assert metric["args"] == {"protocol": "cleanrl", "episodes": 6, "epsilon": 0.05}
    assert f"| {np.median(scores):.2f} |" in body
    assert "fastdqn eval dqn-CartPole-v1 --episodes 6 --epsilon 0.05 --seed 321" in body
    assert "| `hidden` | `16,8` |" in body and "| `buffer_size` | `1000` |" in body
    assert "run_dir" not in body


def test_video_newest_of_the_run_or_given(run_dir, tmp_path, capsys):
    videos = run_dir / "videos"
    videos.mkdir()
    try:
        for step in (900, 4000, 12):
            (videos / f"eval-{step}.mp4").write_bytes(f"video at {step}".encode())
        out = tmp_path / "out"
        assert main(["export", str(run_dir), str(out), *EVAL]) == 0
        assert (out / "replay.mp4").read_bytes() == b"video at 4000"
        assert "replay.mp4" in (out / "README.md").read_text()
        given = tmp_path / "mine.mp4"
        given.write_bytes(b"my video")
        assert main(["export", str(run_dir), str(out), *EVAL, "--force", "--video", str(given)]) == 0
        assert (out / "replay.mp4").read_bytes() == b"my video"
    finally:
        for path in videos.iterdir():
            path.unlink()
        videos.rmdir()
    # An export without a video replaces an earlier one's video too.
    assert main(["export", str(run_dir), str(out), *EVAL, "--force"]) == 0
    assert not (out / "replay.mp4").exists()


def test_eval_json_is_reused_only_for_its_own_run(run_dir, tmp_path, capsys, workdir):
    stats = _eval_json(run_dir, capsys)
    saved = tmp_path / "eval.json"
    saved.write_text(json.dumps(stats))
    out = tmp_path / "out"
    assert main(["export", str(run_dir), str(out), "--eval-json", str(saved)]) == 0
    assert json.loads((out / "eval.json").read_text()) == stats
    saved.write_text(json.dumps({**stats, "global_step": 10}))
    fails(["export", str(run_dir), str(workdir / "other"), "--eval-json", str(saved)], capsys, workdir,
          "--eval-json", "step 10", "step 4000")
    saved.write_text("{")
    fails(["export", str(run_dir), str(workdir / "other"), "--eval-json", str(saved)], capsys, workdir,
          "--eval-json", "not JSON")


def test_out_dir_is_never_merged_into(run_dir, exported, tmp_path, capsys, workdir):
    mine = workdir / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    fails(["export", str(run_dir), str(mine)], capsys, workdir, "OUT_DIR", "notes.txt", "new or empty")
    fails(["export", str(run_dir), str(mine), "--force"], capsys, workdir, "OUT_DIR", "notes.txt")
    assert (mine / "notes.txt").read_text() == "keep me" and len(list(mine.iterdir())) == 1
    before = {p.name: p.read_bytes() for p in exported.iterdir()}
    fails(["export", str(run_dir), str(exported)], capsys, workdir, "earlier export", "--force")
    assert {p.name: p.read_bytes() for p in exported.iterdir()} == before
    fails(["export", str(run_dir), str(run_dir)], capsys, workdir, "checkpoint.pt")
    fails(["export", str(exported), str(workdir / "x")], capsys, workdir, "RUN_DIR", "model folder")


@pytest.mark.parametrize("argv, expected", [
    (["--episodes", "0"], "--episodes"),
    (["--epsilon", "1.5"], "--epsilon"),
    (["--seed", "-1"], "--seed"),
    (["--push-to-hub", "no-namespace"], "--push-to-hub"),
    (["--push-to-hub", "a/b c"], "--push-to-hub"),
    (["--video", "clip.gif"], "--video"),
])
def test_bad_export_input(run_dir, argv, expected, capsys, workdir):
    fails(["export", str(run_dir), str(workdir / "out"), *argv], capsys, workdir, expected)


def test_missing_packages_name_the_extra(run_dir, capsys, workdir, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    for missing, argv in (("huggingface_hub", ["--push-to-hub", "me/dqn"]), ("safetensors", [])):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, m=missing: None if name == m else real(name, *a))
        fails(["export", str(run_dir), str(workdir / "out"), *argv], capsys, workdir, missing, "fastdqn[hub]")


def test_push_to_hub_uploads_the_folder_once(run_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw)))

    def upload_folder(self, **kw):
        calls.append(("upload_folder", sorted(p.name for p in os.scandir(kw["folder_path"])), kw))

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "out"
    assert main(["export", str(run_dir), str(out), *EVAL, "--push-to-hub", "me/dqn-CartPole-v1"]) == 0
    assert calls[0] == ("create_repo", "me/dqn-CartPole-v1", {"repo_type": "model", "exist_ok": True})
    name, files, kwargs = calls[1]
    assert name == "upload_folder" and len(calls) == 2
    assert files == ["README.md", "config.json", "eval.json", "model.safetensors"]
    assert kwargs["repo_id"] == "me/dqn-CartPole-v1" and kwargs["folder_path"] == str(out)
    assert kwargs["repo_type"] == "model"
    card = (out / "README.md").read_text()
    assert "hf download me/dqn-CartPole-v1 --local-dir dqn-CartPole-v1" in card
    assert "https://huggingface.co/me/dqn-CartPole-v1" in capsys.readouterr().out


def test_failed_upload_keeps_the_folder_and_says_how_to_retry(run_dir, tmp_path, capsys, monkeypatch):
    import huggingface_hub

    def refuse(self, *a, **kw):
        raise RuntimeError("401 Unauthorized")

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", refuse)
    out = tmp_path / "out"
    assert main(["export", str(run_dir), str(out), *EVAL, "--push-to-hub", "me/dqn"]) == 1
    line = capsys.readouterr().err.strip()
    assert "401 Unauthorized" in line and f"hf upload me/dqn {out}" in line and "\n" not in line
    assert (out / "model.safetensors").is_file()


# ---- loading a model folder: what it refuses -------------------------------------------------


@pytest.fixture
def copy_of(exported, tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    for path in exported.iterdir():
        (out / path.name).write_bytes(path.read_bytes())
    return out


def _resave(folder, tensors, **metadata):
    from safetensors.torch import save_file

    meta = {"format": "fastdqn-model", "version": "1", "env_id": "CartPole-v1", "global_step": "4000", **metadata}
    save_file(tensors, folder / "model.safetensors", metadata=meta)


def test_symbolic_links_are_refused(copy_of, capsys, workdir):
    real = copy_of / "real.safetensors"
    (copy_of / "model.safetensors").rename(real)
    (copy_of / "model.safetensors").symlink_to(real)
    fails(["eval", str(copy_of)], capsys, workdir, "symbolic link", "model.safetensors")


def test_foreign_tensors_are_refused(copy_of, capsys, workdir):
    from safetensors.torch import load_file

    tensors = load_file(copy_of / "model.safetensors")
    _resave(copy_of, {**tensors, "extra.weight": torch.zeros(3)})
    fails(["eval", str(copy_of)], capsys, workdir, "expected tensors", "extra.weight")
    _resave(copy_of, {**tensors, "net.0.weight": torch.zeros(16, 5)})
    fails(["eval", str(copy_of)], capsys, workdir, "'net.0.weight'", "(16, 4)", "(16, 5)")
    _resave(copy_of, {**tensors, "net.0.weight": tensors["net.0.weight"].double()})
    fails(["eval", str(copy_of)], capsys, workdir, "'net.0.weight'", "torch.float64")
    bad = tensors["net.0.bias"].clone()
    bad[0] = float("nan")
    _resave(copy_of, {**tensors, "net.0.bias": bad})
    fails(["eval", str(copy_of)], capsys, workdir, "'net.0.bias'", "NaN")
    _resave(copy_of, tensors, env_id="Acrobot-v1")
    fails(["eval", str(copy_of)], capsys, workdir, "Acrobot-v1", "CartPole-v1")
    _resave(copy_of, tensors, format="other")
    fails(["eval", str(copy_of)], capsys, workdir, "metadata format")


def test_oversized_truncated_and_bad_config_are_refused(copy_of, capsys, workdir):
    weights = copy_of / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data + b"\0" * (2 << 20))
    fails(["eval", str(copy_of)], capsys, workdir, "bytes", "needs at most")
    weights.write_bytes(data[: len(data) - 100])
    fails(["eval", str(copy_of)], capsys, workdir, "truncated or corrupt")
    weights.write_bytes(data)
    config = json.loads((copy_of / "config.json").read_text())
    (copy_of / "config.json").write_text(json.dumps({**config, "hidden": [32, 8]}))
    fails(["eval", str(copy_of)], capsys, workdir, "expected shape")
    (copy_of / "config.json").write_text(json.dumps({**config, "gamma": 7}))
    fails(["eval", str(copy_of)], capsys, workdir, "config.json", "--gamma")
    (copy_of / "config.json").unlink()
    fails(["eval", str(copy_of)], capsys, workdir, "no file config.json")


def test_the_folder_s_weights_are_what_plays(exported, copy_of, capsys):
    """The round trip above would pass for a loader that ignored the file; flipped Q-values must
    change the games."""
    from safetensors.torch import load_file

    tensors = load_file(copy_of / "model.safetensors")
    last = sorted(name for name in tensors if name.endswith(".weight"))[-1].removesuffix(".weight")
    _resave(copy_of, {**tensors, f"{last}.weight": -tensors[f"{last}.weight"], f"{last}.bias": -tensors[f"{last}.bias"]})
    assert _eval_json(copy_of, capsys)["scores"] != _eval_json(exported, capsys)["scores"]
