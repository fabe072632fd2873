"""Audio decoding in the child: any file FFmpeg reads -> 16 kHz mono float32, with PyAV directly.

The same steps as faster-whisper's `decode_audio` (s16 mono resampling in 500,000-sample groups, then
/ 32768), so every backend gets bit-identical input, without importing any backend to get it.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator

import av
import numpy as np

SAMPLE_RATE = 16000
GROUP_SAMPLES = 500_000


def decode(path: str, sampling_rate: int = SAMPLE_RATE) -> np.ndarray:
    resampler = av.audio.resampler.AudioResampler(format="s16", layout="mono", rate=sampling_rate)
    chunks = []
    with av.open(path, mode="r", metadata_errors="ignore") as container:
        for group in _grouped(_valid_frames(container.decode(audio=0))):
            chunks += [frame.to_ndarray().reshape(-1) for frame in resampler.resample(group)]
        chunks += [frame.to_ndarray().reshape(-1) for frame in resampler.resample(None)]  # flush
    del resampler
    gc.collect()  # PyAV's resampler keeps buffers until collected
    pcm = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)
    return pcm.astype(np.float32) / 32768.0


def _valid_frames(frames: Iterator[av.AudioFrame]) -> Iterator[av.AudioFrame]:
    """Skip frames FFmpeg reports as invalid data (a damaged packet in an otherwise readable file)."""
    while True:
        try:
            yield next(frames)
        except StopIteration:
            return
        except av.error.InvalidDataError:
            continue


def _grouped(frames: Iterator[av.AudioFrame]) -> Iterator[av.AudioFrame]:
    fifo = av.audio.fifo.AudioFifo()
    for frame in frames:
        frame.pts = None  # the FIFO checks timestamps; decoded files can have gaps
        fifo.write(frame)
        if fifo.samples >= GROUP_SAMPLES:
            yield fifo.read()
    if fifo.samples > 0:
        yield fifo.read()
