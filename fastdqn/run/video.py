"""Videos of evaluation games: the game's own RGB screen (EnvPool's ``render``) written to .mp4
(H.264 through the ffmpeg binary that the ``imageio-ffmpeg`` wheel ships) or .gif, frame by
frame as the game is played, so a long game is never held in memory as an .mp4.

The video shows env 0 of the evaluation envs: all the games it plays in that evaluation
(its quota, ``evaluate``). Rendering reads the emulator's screen and draws nothing from any
random generator, so the games, actions and scores are the ones played without a video.
imageio is an optional dependency (``pip install 'fastdqn[video]'``), imported here only.
"""

from __future__ import annotations

import os
from pathlib import Path

from fastdqn.errors import ConfigError
from fastdqn.run.config import ATARI

FORMATS = (".mp4", ".gif")
ATARI_FPS = 15  # the emulator's 60 frames per second at frame skip 4: real speed
VECTOR_FPS = 50  # gymnasium's CartPole render_fps (one frame per 0.02 s step)


def check_video(flag: str, path: str | os.PathLike | None = None) -> None:
    """Refuse, before any work, a missing imageio/ffmpeg or a path that could not be written."""
    if path is not None:
        path = Path(path)
        if path.suffix.lower() not in FORMATS:
            raise ConfigError(f"{flag}: expected a file ending in {', '.join(FORMATS)}, got {str(path)!r}")
        if path.is_dir():
            raise ConfigError(f"{flag}: {str(path)!r} is a folder; pass a file name")
        folder = path.parent
        if not folder.is_dir():
            raise ConfigError(f"{flag}: folder {str(folder)!r} does not exist; create it first")
        if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
            raise ConfigError(f"{flag}: no permission to write {str(path)!r}; choose another path")
    try:
        import imageio  # noqa: F401
        if path is None or Path(path).suffix.lower() == ".mp4":
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise ConfigError(f"{flag}: videos need imageio and imageio-ffmpeg ({exc}); "
                          "pip install 'fastdqn[video]'") from None


def video_fps(kind: str) -> int:
    return ATARI_FPS if kind == ATARI else VECTOR_FPS


class VideoWriter:
    """Appends RGB frames (H, W, 3 uint8) to ``path``; the format follows the extension."""

    def __init__(self, path: str | os.PathLike, fps: int) -> None:
        import imageio.v2 as imageio

        self.path = Path(path)
        self.frames = 0
        if self.path.suffix.lower() == ".gif":
            self._writer = imageio.get_writer(self.path, mode="I", duration=1000 / fps, loop=0)
        else:
            # macro_block_size 2: H.264's 4:2:0 colour needs even sides only, so Atari's 210x160
            # is kept as it is instead of being scaled to multiples of 16.
            self._writer = imageio.get_writer(self.path, fps=fps, codec="libx264", macro_block_size=2,
                                              quality=None, output_params=["-crf", "18"])

    def add(self, frame) -> None:
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
