"""Per-utterance flags for the ways Whisper invents text, from a result row's samples.

A corpus WER mixes ordinary misrecognitions with the failures that matter most in deployment:
the decoder stuck in a loop ("thank you. thank you. thank you. thank you."), text far longer than
what was said, and text timed after the audio has ended. These flags name them per utterance, so a
report can say "2 of 10 clips looped" instead of letting one loop hide in (or dominate) a WER.

Both texts are normalized as for scoring (harness.analyze.scoring.normalize: per language, punctuation and
case removed), then split on whitespace. Thresholds, and why:

- `repetition`: a word repeated 4+ times in a row ("the the the the"), a 2-4 word phrase 3+ times in
  a row ("thank you thank you thank you"), or a phrase of 5+ words twice in a row (a duplicated
  segment, Whisper's other loop) -- and more times in a row than the reference has it, so speech that
  really repeats is not flagged. People double and triple words ("no no", "very very", "não não
  não"): a single word needs four copies. A phrase of 2-4 words said three times running is rare in
  speech and the typical short loop; a run of 5+ words said twice verbatim in a row is rarer still.
  Only the shortest repeating unit counts ("no no no no" is a word loop, not "no no" twice).
  Also (needs a reference) an *echo*: a phrase of 6+ words that occurs more often in the hypothesis
  than in the reference, anywhere, not only back to back. Whisper re-emits an earlier line after the
  speech has ended (measured on real-dev: faster-whisper base float32 on the 53 s LibriVox sonnet
  appended two earlier lines, timed to 62 s); six words in the same order twice is rare unless the
  speaker said them twice, which the reference shows. Shorter phrases ("at the end of the") recur
  in ordinary long transcripts.
- `over-generation`: more than 1.5 x the reference's words + 5. Loops, duplicated segments and text
  invented over silence or music add words wholesale; misrecognitions, split compounds and
  disfluencies do not add half again. The + 5 keeps short references from flagging a few extra words
  (a 2-word reference allows 8). It needs a reference; a silent clip (reference with no words)
  transcribed as "Thank you." is not flagged by it (2 words).
- `past-audio-end`: a segment ends more than 1 s after the audio does (only when the sample carries
  segment end times: rows today carry text only). Timestamps come in 20 ms steps and the last one
  may sit a little past the final speech; a full second past the end of the file is text for audio
  that does not exist.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from harness.analyze.scoring import Normalization, normalize

FLAGS = ("repetition", "over-generation", "past-audio-end")
WORD_LOOP_COPIES = 4         # one word: 4+ consecutive copies
SHORT_PHRASE_MAX_WORDS = 4
SHORT_PHRASE_COPIES = 3      # 2-4 words: 3+ consecutive copies
LONG_PHRASE_COPIES = 2       # 5+ words: 2+ consecutive copies (a duplicated segment)
ECHO_MIN_WORDS = 6           # a 6-word phrase more often in the hypothesis than in the reference
OVER_GENERATION_RATIO = 1.5
OVER_GENERATION_SLACK = 5
PAST_END_TOLERANCE_S = 1.0


def _min_copies(n: int) -> int:
    return WORD_LOOP_COPIES if n == 1 else SHORT_PHRASE_COPIES if n <= SHORT_PHRASE_MAX_WORDS else LONG_PHRASE_COPIES


def _primitive(gram: tuple[str, ...]) -> bool:
    """Not itself a repetition of a shorter unit (("no", "no") is "no" twice)."""
    n = len(gram)
    return not any(n % d == 0 and gram == gram[:d] * (n // d) for d in range(1, n // 2 + 1))


def _canonical(gram: tuple[str, ...]) -> tuple[str, ...]:
    """The same loop read from any starting word ("you thank" = "thank you"): the least rotation."""
    return min(gram[i:] + gram[:i] for i in range(len(gram)))


def runs(words: Sequence[str], *, min_copies: int = 2) -> list[tuple[tuple[str, ...], int, int]]:
    """Every maximal run of a phrase repeated back to back in `words`: (phrase, copies, start index)
    with copies >= min_copies, for phrases of 1 to len(words) // 2 words that are not themselves
    repetitions of a shorter phrase. Vectorized: for each length n, positions where word i equals word
    i + n form runs; a run of r such positions is (r + n) // n copies."""
    if not words:
        return []
    vocab: dict[str, int] = {}
    ids = np.array([vocab.setdefault(w, len(vocab)) for w in words], dtype=np.int64)
    found = []
    for n in range(1, len(words) // 2 + 1):
        same = np.concatenate(([0], (ids[:-n] == ids[n:]).astype(np.int8), [0]))
        edges = np.flatnonzero(np.diff(same))
        for start, end in zip(edges[::2], edges[1::2]):
            copies = (end - start + n) // n
            gram = tuple(words[start:start + n])
            if copies >= max(min_copies, 2) and _primitive(gram):
                found.append((gram, int(copies), int(start)))
    return found


def _most_copies(words: Sequence[str]) -> dict[tuple[str, ...], int]:
    most: dict[tuple[str, ...], int] = {}
    for gram, copies, _start in runs(words):
        key = _canonical(gram)
        most[key] = max(most.get(key, 1), copies)
    return most


def loops(hypothesis: str, lang: str, reference: str | None = None, how: Normalization | None = None
          ) -> list[tuple[tuple[str, ...], int, int]]:
    """The runs of the normalized hypothesis that make it a `repetition` (phrase, copies, start word):
    at or past the copies threshold for the phrase's length, and (given a reference) more copies in a
    row than the reference has of that phrase."""
    hyp = normalize(hypothesis, lang, how).split()
    in_ref = _most_copies(normalize(reference, lang, how).split()) if reference is not None else {}
    return [(gram, copies, start) for gram, copies, start in runs(hyp)
            if copies >= _min_copies(len(gram)) and copies > in_ref.get(_canonical(gram), 1)]


def _ngram_counts(words: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))


def echoes(hypothesis: str, lang: str, reference: str, how: Normalization | None = None
           ) -> list[tuple[tuple[str, ...], int, int]]:
    """Phrases of ECHO_MIN_WORDS words the normalized hypothesis has more often than the reference
    (at least twice): (phrase, times in the hypothesis, times in the reference), in order of first
    appearance. Overlapping phrases of one echoed passage are all listed."""
    hyp = normalize(hypothesis, lang, how).split()
    in_ref = _ngram_counts(normalize(reference, lang, how).split(), ECHO_MIN_WORDS)
    return [(gram, times, in_ref[gram]) for gram, times in _ngram_counts(hyp, ECHO_MIN_WORDS).items()
            if times >= 2 and times > in_ref[gram]]


def _last_end(segment_end_s: float | Sequence[float] | None) -> float | None:
    if segment_end_s is None:
        return None
    if isinstance(segment_end_s, (int, float)):
        return float(segment_end_s)
    ends = [float(e) for e in segment_end_s]
    return max(ends) if ends else None


def flags(reference: str | None, hypothesis: str, lang: str, audio_s: float | None = None,
          segment_end_s: float | Sequence[float] | None = None, how: Normalization | None = None) -> list[str]:
    """The flags (in FLAGS order) one transcript earns; see the module docstring for each rule.
    `reference` None: no over-generation or echo check, and no allowance for repeats the reference has.
    `segment_end_s`: the last segment's end time, or every segment's (the latest counts); with
    `audio_s`, the audio's duration in seconds."""
    out = []
    if loops(hypothesis, lang, reference, how) or (reference is not None and echoes(hypothesis, lang, reference, how)):
        out.append("repetition")
    if reference is not None:
        ref_words = len(normalize(reference, lang, how).split())
        if len(normalize(hypothesis, lang, how).split()) > OVER_GENERATION_RATIO * ref_words + OVER_GENERATION_SLACK:
            out.append("over-generation")
    end = _last_end(segment_end_s)
    if end is not None and audio_s is not None and end > audio_s + PAST_END_TOLERANCE_S:
        out.append("past-audio-end")
    return out


def _segment_ends(sample: Mapping[str, Any]) -> float | list[float] | None:
    if sample.get("segment_end_s") is not None:
        return sample["segment_end_s"]
    segments = sample.get("segments")
    if segments:
        return [s["end"] for s in segments if isinstance(s, Mapping) and s.get("end") is not None]
    return None


def count_flags(samples: Iterable[Mapping[str, Any]], how: Normalization | Mapping[str, Normalization] | None = None,
                *, lang: str | None = None) -> dict[str, int]:
    """How many of a row's samples earn each flag: {"samples": checked, "flagged": with any flag,
    "repetition": ..., "over-generation": ..., "past-audio-end": ...}. A sample is a dict with lang,
    hypothesis, reference, audio_s and, when the backend records them, "segment_end_s" (a number or a
    list) or "segments" ([{"end": seconds}, ...]). `how`: one normalization, or one per language
    (as a row's data.normalization, converted to Normalization); missing languages use the default.
    `lang`: only that language's samples. Samples without a hypothesis are not checked."""
    counts = {"samples": 0, "flagged": 0, **{f: 0 for f in FLAGS}}
    for s in samples:
        if s.get("hypothesis") is None or (lang is not None and s.get("lang") != lang):
            continue
        norm = how.get(s["lang"]) if isinstance(how, Mapping) else how
        found = flags(s.get("reference"), s["hypothesis"], s["lang"], s.get("audio_s"), _segment_ends(s), norm)
        counts["samples"] += 1
        counts["flagged"] += bool(found)
        for f in found:
            counts[f] += 1
    return counts
