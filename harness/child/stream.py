"""Stream mode in the child: cut a recording into the pieces a live service receives, and join the
pieces' texts into the transcript (the parent replays the session and scores it: analyze.streaming).

With `buffer: pieces` each piece is transcribed on its own (starting `overlap_s` earlier, to give words
cut at the seam a second chance) and its new words are appended; with `buffer: growing` everything
received so far is transcribed again and replaces the transcript.
"""

from __future__ import annotations

from collections.abc import Sequence

SAMPLE_RATE = 16000
BUFFERS = ("pieces", "growing")


def pieces(n_samples: int, chunk_s: float, overlap_s: float, buffer: str) -> list[tuple[int, int]]:
    """[(start, end)] sample ranges to transcribe, one per arriving chunk (the last may be shorter)."""
    step = int(chunk_s * SAMPLE_RATE)
    overlap = int(overlap_s * SAMPLE_RATE)
    return [(0 if buffer == "growing" else max(0, begin - overlap), min(begin + step, n_samples))
            for begin in range(0, n_samples, step)]


def merge(texts: Sequence[str], buffer: str, max_overlap_words: int = 8) -> str:
    """The transcript after the last piece: the last text (growing buffer), or the pieces joined with
    the words repeated across each seam (from the overlap) dropped once."""
    if buffer == "growing":
        return texts[-1].strip() if texts else ""
    words: list[str] = []
    for text in texts:
        new = text.split()
        keys = [_key(w) for w in new]
        tail = [_key(w) for w in words[-max_overlap_words:]]
        repeated = next((n for n in range(min(len(tail), len(keys)), 0, -1) if tail[-n:] == keys[:n]), 0)
        words += new[repeated:]
    return " ".join(words)


def _key(word: str) -> str:
    return "".join(ch for ch in word.lower() if ch.isalnum())
