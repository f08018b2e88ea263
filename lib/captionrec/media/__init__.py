"""Media access with PyAV: probe metadata, sample frames, load audio. No Spark, no models, no global state.

```python
from captionrec.media import probe, sample_frames, load_audio, is_silent, MediaError
info = probe("clip.mp4")                    # ProbeResult (frozen): duration_s, width, height, fps, ...
fs = sample_frames("clip.mp4", num_frames=16, window_s=30.0, max_pixels=448 * 448)
fs.frames                                   # (16, H, W, 3) uint8 RGB; fs.times_s (16,)
wav = load_audio("clip.mp4", sample_rate=16000, window_s=30.0)   # (S,) float32 mono
is_silent(wav)                              # RMS below -50 dBFS
```
Consecutive windows over a whole video, decoded one at a time: ``captionrec.media.windows``.
Every failure is a ``MediaError`` with a machine-readable ``reason`` (see ``captionrec.media.errors``).
"""

from captionrec.media.audio import audio_rms_dbfs, is_silent, load_audio
from captionrec.media.errors import REASONS, MediaError
from captionrec.media.frames import FrameSample, output_size, sample_frames, target_times
from captionrec.media.probe import ProbeResult, probe

__all__ = [
    "REASONS",
    "FrameSample",
    "MediaError",
    "ProbeResult",
    "audio_rms_dbfs",
    "is_silent",
    "load_audio",
    "output_size",
    "probe",
    "sample_frames",
    "target_times",
]
