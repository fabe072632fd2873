"""The `max_audio_s` probe: per language, one recording of the longest request the service accepts.

It is made of the dataset's own clips of that language, in order (again from the start when they run
out), joined with the pauses of the bundled long-form recordings, until it is at least `max_audio_s`
long (it ends after a whole clip, so its reference is the clips' transcripts joined). The clips are
decoded as the worker decodes (harness.child.audio: 16 kHz mono) and the probe is written once, as
16-bit WAV, to the harness cache under a key of its content (the clips' sha256, the length, the pause).

Its sample is labelled `probe`: every configuration transcribes it once, after the timed samples, so
the run's peak memory and Kubernetes figures, and `harness fit` (the longest sample per language),
cover it, while latency, RTF and WER statistics leave it out (the row keeps it under `probes`).
"""

from __future__ import annotations

import hashlib
import json
import os
import wave
from pathlib import Path

import numpy as np

from harness.data.datasets import LONG_FORM_PAUSE_S, SAMPLE_RATE, Sample, cycle_to_length
from harness.weights.models import cache_dir

DATASET = "probe"
FORMAT = 1  # bump when the way a probe is made changes (its cache key)


def probes(samples: list[Sample], max_audio_s: float) -> list[Sample]:
    """One probe per language of `samples`, in the order the languages first appear."""
    return [build([s for s in samples if s.lang == lang], max_audio_s)
            for lang in dict.fromkeys(s.lang for s in samples if not s.probe)]


def build(clips: list[Sample], max_audio_s: float) -> Sample:
    """The probe of one language's clips (built on first use, then read from the cache)."""
    lang = clips[0].lang
    digests = [_sha256(c.audio) for c in clips]
    key = hashlib.sha256(json.dumps([FORMAT, digests, max_audio_s, LONG_FORM_PAUSE_S]).encode()).hexdigest()[:16]
    wav = cache_dir() / "probes" / f"{lang}-{max_audio_s:g}s-{key}.wav"
    label = wav.with_suffix(".json")
    if not (wav.is_file() and label.is_file()):
        _write(clips, max_audio_s, wav, label)
    meta = json.loads(label.read_text(encoding="utf-8"))
    return Sample(id=f"probe_{lang}_{max_audio_s:g}s", lang=lang, audio=str(wav), text=meta["text"], dataset=DATASET,
                  synthetic=all(c.synthetic for c in clips), duration_s=meta["audio_s"], probe=True)


def _write(clips: list[Sample], max_audio_s: float, wav: Path, label: Path) -> None:
    from harness.child.audio import decode

    pcm: dict[int, np.ndarray] = {}  # only the clips the probe needs (each once)

    def seconds(i: int) -> float:
        if i not in pcm:
            pcm[i] = (np.clip(decode(clips[i].audio), -1.0, 32767 / 32768) * 32768).astype("<i2")
        return len(pcm[i]) / SAMPLE_RATE

    picked = cycle_to_length(seconds, len(clips), max_audio_s, LONG_FORM_PAUSE_S)
    pause = np.zeros(round(LONG_FORM_PAUSE_S * SAMPLE_RATE), dtype="<i2").tobytes()
    wav.parent.mkdir(parents=True, exist_ok=True)
    tmp = wav.with_name(f".{wav.name}.tmp{os.getpid()}")
    try:
        with wave.open(str(tmp), "wb") as out:
            out.setnchannels(1)
            out.setsampwidth(2)
            out.setframerate(SAMPLE_RATE)
            for n, i in enumerate(picked):
                out.writeframes((pause if n else b"") + pcm[i].tobytes())
        os.replace(tmp, wav)
    finally:
        tmp.unlink(missing_ok=True)
    # a clip without a transcript leaves the probe without one: its WER is absent, not wrong
    text = " ".join(clips[i].text for i in picked) if all(clips[i].text.strip() for i in picked) else ""
    audio_s = sum(len(pcm[i]) for i in picked) / SAMPLE_RATE + LONG_FORM_PAUSE_S * (len(picked) - 1)
    meta = {"text": text, "audio_s": round(audio_s, 3), "clips": [clips[i].id for i in picked],
            "generator": f"{len(picked)} clips joined with {LONG_FORM_PAUSE_S} s pauses", "max_audio_s": max_audio_s}
    tmp_label = label.with_name(f".{label.name}.tmp{os.getpid()}")
    tmp_label.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp_label, label)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
