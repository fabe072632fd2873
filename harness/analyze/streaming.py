"""Stream mode, parent side: replay a live session from the worker's per-piece timings, and count the
word errors that sit at a seam between pieces (the child side is harness.child.stream).

The worker measures the compute time of every piece; the timeline of a live session then follows
without waiting in real time: a piece can start when it has arrived and the previous one is done, and
its lag is how long after its arrival its text is ready.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.analyze.scoring import Normalization


def session_timeline(ends_s: Sequence[float], compute_s: Sequence[float], duration_s: float) -> dict[str, float]:
    """Replay one live session: piece i arrives at ends_s[i] (audio time) and takes compute_s[i].
    Returns the largest lag of any piece behind its arrival and the final latency (time from the end
    of the audio to the final transcript)."""
    finish = 0.0
    lags = []
    for arrival, seconds in zip(ends_s, compute_s, strict=True):
        finish = max(arrival, finish) + seconds
        lags.append(finish - arrival)
    return {"lag_max_s": max(lags), "final_latency_s": finish - duration_s}


def boundary_errors(reference: str, pieces_text: Sequence[str], lang: str,
                    how: Normalization | None = None) -> dict[str, int]:
    """Errors (substitutions, deletions, insertions) at a seam between pieces, against all errors: the
    word-level cost of cutting the audio. An error is at a seam when it touches the word before or
    after one."""
    import jiwer

    from harness.analyze import scoring as metrics

    ref = metrics.normalize(reference, lang, how)
    normalized = [metrics.normalize(t, lang, how) for t in pieces_text]
    hyp = " ".join(t for t in normalized if t)
    if not ref or not hyp:
        return {"errors": 0, "at_boundaries": 0}
    seams, position = set(), 0
    for text in normalized[:-1]:
        position += len(text.split())
        seams.add(position)
    out = jiwer.process_words(ref, hyp)
    errors = at_seams = 0
    for chunk in out.alignments[0]:
        if chunk.type == "equal":
            continue
        count = max(chunk.ref_end_idx - chunk.ref_start_idx, chunk.hyp_end_idx - chunk.hyp_start_idx)
        errors += count
        if any(chunk.hyp_start_idx - 1 <= seam <= chunk.hyp_end_idx + 1 for seam in seams):
            at_seams += count
    return {"errors": errors, "at_boundaries": at_seams}


def summarize(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Row metrics of a stream-mode run from its samples (each with `chunks`: per timed run, the
    compute seconds of every piece, and `chunk_ends_s`)."""
    from harness.analyze import scoring as metrics

    chunk_times = [s for sample in samples for run in sample["chunks"] for s in run]
    sessions = [session_timeline(sample["chunk_ends_s"], run, sample["audio_s"])
                for sample in samples for run in sample["chunks"]]
    finals = [s["final_latency_s"] for s in sessions]
    return {
        "chunks": len(chunk_times),
        "chunk_latency_p50_s": round(metrics.percentile(chunk_times, 50), 4),
        "chunk_latency_p95_s": round(metrics.percentile(chunk_times, 95), 4),
        "lag_max_s": round(max(s["lag_max_s"] for s in sessions), 4),
        "final_latency_p50_s": round(metrics.percentile(finals, 50), 4),
        "final_latency_p95_s": round(metrics.percentile(finals, 95), 4),
    }
