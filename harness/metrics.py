"""Pure measurement math: normalized corpus WER/CER per language, latency statistics, RTF."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from functools import cache

import jiwer

# Whisper's normalizers (from the whisper-normalizer package, no PyTorch needed): English gets the
# English normalizer (spelling, numbers, contractions); other languages the basic one (lowercase,
# no punctuation or bracketed text, diacritics kept).


@cache
def normalizer(lang: str) -> Callable[[str], str]:
    if lang == "en":
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def normalize(text: str, lang: str) -> str:
    return " ".join(normalizer(lang)(text).split())


def error_rates(references: Sequence[str], hypotheses: Sequence[str], lang: str) -> dict[str, float | int]:
    """Corpus-level WER and CER: total (S + D + I) / total reference words (characters)."""
    pairs = [(normalize(r, lang), normalize(h, lang)) for r, h in zip(references, hypotheses, strict=True)]
    pairs = [(r, h) for r, h in pairs if r]  # a reference that normalizes to nothing has no words to miss
    if not pairs:
        return {"wer": float("nan"), "cer": float("nan"), "words": 0}
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    words = jiwer.process_words(refs, hyps)
    chars = jiwer.process_characters(refs, hyps)
    return {
        "wer": words.wer, "cer": chars.cer,
        "words": words.hits + words.substitutions + words.deletions,
        "substitutions": words.substitutions, "deletions": words.deletions, "insertions": words.insertions,
    }


def sample_wer(reference: str, hypothesis: str, lang: str) -> float | None:
    ref = normalize(reference, lang)
    return jiwer.wer(ref, normalize(hypothesis, lang)) if ref else None


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    data = sorted(values)
    if not data:
        raise ValueError("no values")
    pos = (len(data) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def coefficient_of_variation(values: Sequence[float]) -> float | None:
    if len(values) < 2 or statistics.fmean(values) == 0:
        return None
    return statistics.stdev(values) / statistics.fmean(values)


def median_cv(per_sample_latencies: Sequence[Sequence[float]]) -> float | None:
    """The typical repeat-to-repeat spread of the warm timings (median over samples)."""
    cvs = [cv for lat in per_sample_latencies if (cv := coefficient_of_variation(lat)) is not None]
    return statistics.median(cvs) if cvs else None
