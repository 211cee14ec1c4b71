"""Voice notes for WhatsApp: Opus in Ogg, passed through as it is, or converted with ffmpeg as neonize does.

ffmpeg is a system package (``scripts/system-deps``, the Containerfile); without it only Ogg audio can
become a voice note, and anything else fails with FFMPEG_MISSING, a clear and final error, never a crash.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from session_proc.engine import EngineError

CONVERT_TIMEOUT = 120.0  # seconds; a voice note is at most a few minutes of audio
_OGG = "audio/ogg"


def as_opus(path: Path, mimetype: str | None, *, ffmpeg: str | None = None) -> bytes:
    """The bytes of a voice note for the audio at ``path``: Ogg as it is, anything else through ffmpeg."""
    if mimetype is not None and mimetype.split(";", 1)[0].strip().lower() == _OGG:
        return path.read_bytes()
    binary = ffmpeg or shutil.which("ffmpeg")
    if binary is None:
        raise EngineError(
            "FFMPEG_MISSING",
            f"a voice note in {mimetype or 'this format'} must be converted to Opus, which needs ffmpeg:"
            " install it (scripts/system-deps does), or send Ogg/Opus audio",
        )
    command = [binary, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", str(path)]
    command += ["-vn", "-ac", "1", "-c:a", "libopus", "-b:a", "32k", "-f", "ogg", "pipe:1"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=CONVERT_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise EngineError("MEDIA_CONVERSION_FAILED", f"ffmpeg took over {CONVERT_TIMEOUT:.0f}s") from None
    except OSError as exc:
        raise EngineError("FFMPEG_MISSING", f"ffmpeg could not be run: {exc.strerror}") from None
    if done.returncode != 0 or not done.stdout:
        why = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        raise EngineError("MEDIA_CONVERSION_FAILED", f"ffmpeg could not make Opus of it: {why[0][:300]}")
    return done.stdout
