"""How sure a corpus WER is: bootstrap confidence intervals over utterances, the paired bootstrap for
comparing two systems on the same utterances, and how much more speech would settle a question.

Why: corpus WER per language is total (S + D + I) / total reference words. With 9-10 clips per
language one clip moves it by points, and the difference of two such figures (int8 vs float32) is
mostly noise unless the comparison is *paired*: both systems transcribed the same utterances, so a
resample draws which utterances count (with replacement) and uses the same draw for both systems
(M. Bisani and H. Ney, "Bootstrap estimates for confidence intervals in ASR performance evaluation",
ICASSP 2004). What varies is the speech, not the systems' shared difficulty with it.

Method, and why numpy rather than scipy.stats.bootstrap: a seeded numpy Generator (PCG64, `seed`)
draws, for each of `resamples` resamples, n utterance indices with replacement (an integer array,
in fixed-size chunks to bound memory); errors and words are summed over the drawn utterances and the
resample's rate is their ratio. The interval is the percentile interval: numpy.quantile (linear
interpolation) of the resample rates at (1 - confidence) / 2 and (1 + confidence) / 2. scipy's
bootstrap computes the same percentile interval, but the paired comparison and the probability of
improvement need the resample distribution itself, with the same draws for both systems, and scipy
warns (an error under this project's filterwarnings) on the degenerate distributions a small, clean
set gives (every resample at WER 0). 10,000 resamples of a few hundred utterances take tens of
milliseconds.

Counts are integers, so a point estimate equals harness.analyze.scoring.error_rates exactly. Rates and
differences are fractions (0.01 = 1 point); `harness compare`'s policy speaks in points
(wer.max_increase_points: 1.0 is 0.01 here). Pure functions: no I/O; the same seed gives the same
interval.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from statistics import NormalDist
from typing import Any

import jiwer
import numpy as np

from harness.analyze.scoring import Normalization, default_normalization, normalize

UNITS = ("words", "characters")
VERDICTS = ("met", "failed", "insufficient data")
DEFAULT_RESAMPLES = 10_000
# Index cells drawn per chunk (resamples x utterances): bounds the temporary arrays to a few tens of MB.
_CHUNK_CELLS = 1_000_000
# words_needed gives up past this many reference words (it cannot be settled in practice).
WORDS_CAP = 10_000_000


# ---- per-utterance counts ----------------------------------------------------------------------

def _count(reference: str, hypothesis: str, lang: str, how: Normalization | None, unit: str) -> tuple[int, int] | None:
    """(errors, reference units) of one utterance, or None when its reference normalizes to nothing."""
    ref = normalize(reference, lang, how)
    if not ref:
        return None
    hyp = normalize(hypothesis, lang, how)
    out = jiwer.process_words(ref, hyp) if unit == "words" else jiwer.process_characters(ref, hyp)
    return out.substitutions + out.deletions + out.insertions, out.hits + out.substitutions + out.deletions


def _check_unit(unit: str) -> None:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, not {unit!r}")


def utterance_counts(references: Sequence[str], hypotheses: Sequence[str], lang: str,
                     how: Normalization | None = None, *, unit: str = "words") -> list[tuple[int, int]]:
    """Per utterance: (errors, reference words), or (errors, reference characters) with
    unit="characters"; errors = substitutions + deletions + insertions after both texts are normalized
    with harness.analyze.scoring.normalize (jiwer.process_words / process_characters, one utterance at a
    time). An utterance whose reference normalizes to nothing is left out, as error_rates does, so
    sum(errors) / sum(words) is exactly error_rates(...)["wer"] (["cer"] for characters)."""
    _check_unit(unit)
    counts = (_count(r, h, lang, how, unit) for r, h in zip(references, hypotheses, strict=True))
    return [c for c in counts if c is not None]


def sample_counts(samples: Iterable[Mapping[str, Any]], lang: str, how: Normalization | None = None, *,
                  unit: str = "words") -> dict[str, Any]:
    """The counts of one row's samples of one language (dicts with id, lang, reference, hypothesis):
    {"ids", "errors", "words"} in row order, plus "excluded": how many samples of the language were
    left out because the reference normalizes to nothing ("empty_reference") or a reference or
    hypothesis is missing ("missing_text"). A duplicate id is a ValueError (pairing would be ambiguous)."""
    _check_unit(unit)
    ids: list[str] = []
    errors: list[int] = []
    words: list[int] = []
    excluded = {"empty_reference": 0, "missing_text": 0}
    seen: set[str] = set()
    for s in samples:
        if s.get("lang") != lang:
            continue
        if s["id"] in seen:
            raise ValueError(f"sample id {s['id']!r} appears twice")
        seen.add(s["id"])
        if s.get("reference") is None or s.get("hypothesis") is None:
            excluded["missing_text"] += 1
            continue
        c = _count(s["reference"], s["hypothesis"], lang, how, unit)
        if c is None:
            excluded["empty_reference"] += 1
            continue
        ids.append(s["id"])
        errors.append(c[0])
        words.append(c[1])
    return {"ids": ids, "errors": errors, "words": words, "excluded": excluded}


def paired_from_samples(samples_a: Iterable[Mapping[str, Any]], samples_b: Iterable[Mapping[str, Any]], lang: str,
                        how: Normalization | None = None, *, unit: str = "words") -> dict[str, Any]:
    """Two rows' samples of one language paired by id, for paired_difference.

    Returns {"shared": utterances in both (and scored), "ids", "a_errors", "b_errors", "words" (in
    a's order), "only_a", "only_b": ids on one side only (excluded, counted), "reference_differs":
    shared ids whose normalized references differ between the rows (a changed dataset: excluded,
    counted), "excluded_a", "excluded_b": as sample_counts}. Both rows must be scored with the same
    normalization `how` (rows record theirs in data.normalization)."""
    samples_a, samples_b = list(samples_a), list(samples_b)
    a = sample_counts(samples_a, lang, how, unit=unit)
    b = sample_counts(samples_b, lang, how, unit=unit)
    ref_a = {s["id"]: s.get("reference") for s in samples_a if s.get("lang") == lang}
    ref_b = {s["id"]: s.get("reference") for s in samples_b if s.get("lang") == lang}
    b_by_id = {i: (e, w) for i, e, w in zip(b["ids"], b["errors"], b["words"])}
    ids, a_errors, b_errors, words = [], [], [], []
    differs = 0
    for i, ea, wa in zip(a["ids"], a["errors"], a["words"]):
        if i not in b_by_id:
            continue
        eb, wb = b_by_id[i]
        if wa != wb or normalize(ref_a[i], lang, how) != normalize(ref_b[i], lang, how):
            differs += 1
            continue
        ids.append(i)
        a_errors.append(ea)
        b_errors.append(eb)
        words.append(wa)
    return {"shared": len(ids), "ids": ids, "a_errors": a_errors, "b_errors": b_errors, "words": words,
            "only_a": len(set(ref_a) - set(ref_b)), "only_b": len(set(ref_b) - set(ref_a)),
            "reference_differs": differs, "excluded_a": a["excluded"], "excluded_b": b["excluded"]}


# ---- the bootstrap ---------------------------------------------------------------------------------

def _columns(*columns: Sequence[float]) -> np.ndarray:
    arr = [np.asarray(c, dtype=np.float64) for c in columns]
    if any(a.ndim != 1 for a in arr) or len({a.shape[0] for a in arr}) != 1:
        raise ValueError("the per-utterance columns must be flat sequences of the same length")
    out = np.vstack(arr) if arr[0].size else np.empty((len(arr), 0))
    if out.size and not np.isfinite(out).all():
        raise ValueError("per-utterance counts must be finite")
    if out.size and (out[-1] <= 0).any():
        raise ValueError("every utterance needs at least one reference word (drop empty references first)")
    return out


def _total(values: np.ndarray) -> float | int:
    """An exact sum, as an int when the counts are whole numbers."""
    total = math.fsum(values)
    return int(total) if float(total).is_integer() else total


def _check(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, not {resamples}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, not {confidence}")


def _resampled_sums(rng: np.random.Generator, columns: np.ndarray, resamples: int) -> np.ndarray:
    """(k, resamples): each column summed over `resamples` draws of n utterances with replacement;
    every column uses the same draw (the pairing)."""
    k, n = columns.shape
    out = np.empty((k, resamples))
    step = max(1, _CHUNK_CELLS // n)
    for start in range(0, resamples, step):
        m = min(step, resamples - start)
        idx = rng.integers(0, n, size=(m, n))
        for row in range(k):
            out[row, start:start + m] = columns[row][idx].sum(axis=1)
    return out


def _interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    low, high = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(low), float(high)


def bootstrap_ci(errors: Sequence[float], words: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES,
                 confidence: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the corpus rate sum(errors) / sum(words), resampling whole
    utterances with replacement (a resample's rate = sum of its utterances' errors / sum of their
    words). Same seed, same interval.

    0 utterances: (nan, nan). 1 utterance: (rate, rate) -- every resample is that utterance, so the
    bootstrap sees no spread; that is a lack of data, not certainty (verdicts on it are meaningless)."""
    _check(resamples, confidence)
    cols = _columns(errors, words)
    if cols.shape[1] == 0:
        return math.nan, math.nan
    sums = _resampled_sums(np.random.default_rng(seed), cols, resamples)
    return _interval(sums[0] / sums[1], confidence)


def corpus_rate_ci(samples: Iterable[Mapping[str, Any]], lang: str, how: Normalization | None = None, *,
                   unit: str = "words", resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                   seed: int = 0) -> dict[str, Any]:
    """One row's corpus WER (CER with unit="characters") of a language with its bootstrap interval:
    {"rate", "ci", "utterances", "words", "excluded"}; "words" counts characters for characters.
    Without a single error the bootstrap sees no spread: the upper bound is then at least
    rule_of_three(words, confidence) (no error in 84 words does not show a WER below 4.4 %)."""
    c = sample_counts(samples, lang, how, unit=unit)
    total = sum(c["words"])
    low, high = bootstrap_ci(c["errors"], c["words"], resamples=resamples, confidence=confidence, seed=seed)
    if total and not sum(c["errors"]):
        high = max(high, rule_of_three(total, confidence))
    return {"rate": sum(c["errors"]) / total if total else math.nan, "ci": (low, high),
            "utterances": len(c["words"]), "words": total, "excluded": c["excluded"]}


def rule_of_three(words: float, confidence: float = 0.95) -> float:
    """The upper bound of an error rate per word when none was seen in `words` words: -ln(alpha) / words
    with alpha = (1 - confidence) / 2, the tail a percentile interval leaves above it (Poisson, zero
    events; "the rule of three" at one-sided 95 %: 3.7 / words here). A bootstrap cannot show errors that
    no utterance made, so a comparison in which one side never made more errors than the other would
    otherwise end at exactly 0, however little speech was measured."""
    return -math.log((1 - confidence) / 2) / words


def _nan_difference(**extra: Any) -> dict[str, Any]:
    return {**extra, "increase": math.nan, "ci": (math.nan, math.nan), "p_a_better": math.nan, "p_b_better": math.nan}


def paired_difference(a_errors: Sequence[float], b_errors: Sequence[float], words: Sequence[float], *,
                      resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Paired bootstrap (Bisani & Ney 2004) of how much system b's corpus rate exceeds system a's on
    the same utterances (utterance i: a made a_errors[i], b made b_errors[i], against words[i]
    reference words; pair them with paired_from_samples).

    increase = WER(b) - WER(a) = (sum(b_errors) - sum(a_errors)) / sum(words): positive when b is
    worse ("the increase of b over a"). Each resample draws the utterances once for both systems and
    computes the same difference over them; "ci" is the percentile interval of those differences.
    "p_a_better" is the share of resamples in which b made more errors than a (resampled increase
    > 0): Bisani & Ney's "probability of improvement" of a over b, a bootstrap estimate, not a
    p-value. "p_b_better" is the share with increase < 0; the rest are ties (both made the same
    number of errors on the drawn utterances; for identical transcripts every resample ties).

    Returns {"utterances", "words", "wer_a", "wer_b", "increase", "ci", "p_a_better", "p_b_better",
    "resamples", "confidence", "seed", "method": "paired"}; with no utterances the figures are nan."""
    _check(resamples, confidence)
    cols = _columns(a_errors, b_errors, words)
    n = cols.shape[1]
    base = {"utterances": n, "resamples": resamples, "confidence": confidence, "seed": seed, "method": "paired"}
    if n == 0:
        return {**_nan_difference(**base), "words": 0, "wer_a": math.nan, "wer_b": math.nan}
    total_a, total_b, total_words = (_total(c) for c in cols)
    diff = np.vstack([cols[1] - cols[0], cols[2]])
    sums = _resampled_sums(np.random.default_rng(seed), diff, resamples)
    increases = sums[0] / sums[1]
    return {**base, "words": total_words, "wer_a": total_a / total_words, "wer_b": total_b / total_words,
            "increase": (total_b - total_a) / total_words, "ci": _interval(increases, confidence),
            "p_a_better": float(np.mean(increases > 0)), "p_b_better": float(np.mean(increases < 0))}


def unpaired_difference(a_errors: Sequence[float], a_words: Sequence[float], b_errors: Sequence[float],
                        b_words: Sequence[float], *, resamples: int = DEFAULT_RESAMPLES, confidence: float = 0.95,
                        seed: int = 0) -> dict[str, Any]:
    """WER(b) - WER(a) when the two runs did not transcribe the same utterances (or too few of them
    are shared to pair): each side is bootstrapped on its own utterances, independently (one seeded
    Generator, a's draws first), and the interval is the percentile interval of the differences of
    the two resample rates. Wider than the paired interval whenever the systems' errors fall on the
    same hard utterances: it counts the spread of the speech twice instead of cancelling it. Use it
    only when pairing is impossible.

    Returns {"utterances_a", "utterances_b", "words_a", "words_b", "wer_a", "wer_b", "increase", "ci",
    "p_a_better" (share of resample pairs with WER(b) > WER(a)), "p_b_better", "resamples",
    "confidence", "seed", "method": "unpaired"}; nan figures when either side has no utterance."""
    _check(resamples, confidence)
    a, b = _columns(a_errors, a_words), _columns(b_errors, b_words)
    base = {"utterances_a": a.shape[1], "utterances_b": b.shape[1], "resamples": resamples,
            "confidence": confidence, "seed": seed, "method": "unpaired"}
    wa, wb = _total(a[1]), _total(b[1])
    base.update(words_a=wa, words_b=wb, wer_a=_total(a[0]) / wa if wa else math.nan,
                wer_b=_total(b[0]) / wb if wb else math.nan)
    if not (a.shape[1] and b.shape[1]):
        return _nan_difference(**base)
    rng = np.random.default_rng(seed)
    sa, sb = _resampled_sums(rng, a, resamples), _resampled_sums(rng, b, resamples)
    increases = sb[0] / sb[1] - sa[0] / sa[1]
    return {**base, "increase": base["wer_b"] - base["wer_a"], "ci": _interval(increases, confidence),
            "p_a_better": float(np.mean(increases > 0)), "p_b_better": float(np.mean(increases < 0))}


# ---- verdicts and how much more speech -----------------------------------------------------------

def verdict_within(increase_ci: tuple[float, float], allowed: float) -> str:
    """Is "b's WER is at most `allowed` above a's" (e.g. int8 at most 0.02 above float32) settled?
    "met" when the interval's upper bound <= allowed; "failed" when its lower bound > allowed;
    otherwise (the interval straddles the limit, or is nan) "insufficient data"."""
    low, high = increase_ci
    if math.isnan(low) or math.isnan(high):
        return "insufficient data"
    if high <= allowed:
        return "met"
    if low > allowed:
        return "failed"
    return "insufficient data"


def words_needed(increase: float, increase_ci: tuple[float, float], words: float, allowed: float, *,
                 utterances: int | None = None, cap: int = WORDS_CAP) -> dict[str, Any]:
    """Roughly how many reference words would settle verdict_within(increase_ci, allowed), if the
    point estimate stayed where it is and new utterances were like the measured ones.

    Formula: an interval's half-width shrinks like 1/sqrt(N) with N words (the same spread per word),
    so the side of the interval facing the limit, h = high - increase (when increase < allowed) or
    increase - low (when increase > allowed), becomes h * sqrt(words / N). It stops crossing the limit
    when h * sqrt(words / N) <= |allowed - increase|, i.e.

        N = ceil(words * (h / |allowed - increase|) ** 2)

    and the verdict would then be "met" (increase < allowed) or "failed" (increase > allowed). When
    the point estimate sits on the limit no amount of speech settles it (N is None); nor past `cap`.
    A rough guide: with a few utterances the bootstrap distribution is lumpy (one clip dominating
    gives an interval ending exactly at 0), and the asymptotic 1/sqrt(N) understates what is needed.

    Returns {"verdict_now", "expected_verdict", "total_words", "more_words", "more_utterances" (at
    the observed mean words per utterance, when `utterances` is given), "note"}."""
    now = verdict_within(increase_ci, allowed)
    out: dict[str, Any] = {"verdict_now": now, "expected_verdict": now, "total_words": words, "more_words": 0,
                           "more_utterances": 0 if utterances is not None else None, "note": "already settled"}
    if now != "insufficient data":
        return out
    low, high = increase_ci
    out.update(expected_verdict=None, total_words=None, more_words=None, more_utterances=None)
    if not words or any(math.isnan(x) for x in (increase, low, high)):
        return {**out, "note": "no data"}
    gap = allowed - increase
    if gap == 0:
        return {**out, "note": "the point estimate equals the limit: no amount of speech settles it"}
    side = high - increase if gap > 0 else increase - low
    total = math.ceil(words * (side / abs(gap)) ** 2)
    if total > cap:
        return {**out, "note": f"more than {cap:,} words: the point estimate is too close to the limit"}
    more = max(0, total - math.ceil(words))
    return {**out, "expected_verdict": "met" if gap > 0 else "failed", "total_words": total, "more_words": more,
            "more_utterances": math.ceil(more * utterances / words) if utterances else None,
            "note": f"about {total:,} reference words in all if the increase stays at {increase:+.4f}"}


def words_for_half_width(errors: Sequence[float], words: Sequence[float], half_width: float = 0.01, *,
                         confidence: float = 0.95) -> dict[str, Any]:
    """How many utterances (and words, at the observed mean words per utterance) a confidence interval
    of +-half_width around a corpus rate needs, from the observed per-utterance spread.

    Delta method for the ratio R = sum(e) / sum(w) over n utterances drawn at random: with residuals
    r_i = e_i - R * w_i, s^2 = sum(r_i^2) / (n - 1) and the mean words per utterance wbar,

        Var(R) ~= s^2 / (n * wbar^2),  half-width = z * s / (wbar * sqrt(n)),  z = Phi^-1((1 + confidence) / 2)
        n_needed = ceil((z * s / (wbar * half_width))^2),  words_needed = ceil(n_needed * wbar)

    (equivalently: the current half-width scaled by sqrt(n / n_needed)). Pass per-utterance
    differences b_errors - a_errors as `errors` to size a paired comparison instead of a single WER.
    Needs 2+ utterances and some spread: with every utterance at the same rate (e.g. all perfect)
    the formula has nothing to go on and the answers are None.

    Returns {"rate", "utterances", "words", "words_per_utterance", "current_half_width",
    "utterances_needed", "words_needed", "note"}."""
    if half_width <= 0:
        raise ValueError(f"half_width must be > 0, not {half_width}")
    _check(1, confidence)
    cols = _columns(errors, words)
    n = cols.shape[1]
    total = _total(cols[1]) if n else 0
    out: dict[str, Any] = {"rate": _total(cols[0]) / total if n else math.nan, "utterances": n, "words": total,
                           "words_per_utterance": total / n if n else math.nan, "current_half_width": math.nan,
                           "utterances_needed": None, "words_needed": None, "note": ""}
    if n < 2:
        return {**out, "note": "needs at least 2 utterances to see a spread"}
    wbar = total / n
    residuals = cols[0] - out["rate"] * cols[1]
    s = math.sqrt(float(np.sum(residuals ** 2)) / (n - 1))
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    out["current_half_width"] = z * s / (wbar * math.sqrt(n))
    if s == 0:
        return {**out, "note": "no spread between utterances (all at the same rate): nothing to extrapolate from"}
    needed = math.ceil((z * s / (wbar * half_width)) ** 2)
    return {**out, "utterances_needed": needed, "words_needed": math.ceil(needed * wbar),
            "note": f"delta method, z = {z:.3f}, per-utterance residual sd = {s:.3f} errors"}


# ---- two result rows -------------------------------------------------------------------------------

def row_normalization(row: Mapping[str, Any], lang: str) -> Normalization:
    """How a row scored `lang` (data.normalization; the language's default when it records none)."""
    how = ((row.get("data") or {}).get("normalization") or {}).get(lang)
    return Normalization(**how) if how else default_normalization(lang)


def row_difference(a: Mapping[str, Any], b: Mapping[str, Any], lang: str, *, resamples: int = DEFAULT_RESAMPLES,
                   seed: int = 0) -> dict[str, Any]:
    """How much row b's WER in `lang` exceeds row a's, with its 95 % interval, from the rows' transcripts:
    the paired bootstrap on the utterances both transcribed (same id, same normalized reference), the
    unpaired one when they share none. Never silent about the data: "method" is "paired", "unpaired"
    or "none" (no verdict possible: no transcripts, or the rows were scored with different
    normalizations), and "note" says which, on how much speech, and what was left out.

    Paired, "ci" is the bootstrap interval ("bootstrap_ci") widened by the rule_of_three bound on a side
    no utterance shows (b never worse, or never better, than a: errors it may make that none showed).

    Returns paired_difference's or unpaired_difference's fields plus "only_a", "only_b",
    "reference_differs" (utterances left out of a paired comparison) and "note"."""
    how = row_normalization(a, lang)
    if how != row_normalization(b, lang):
        return {**_nan_difference(method="none", words=0), "only_a": 0, "only_b": 0, "reference_differs": 0,
                "note": f"not compared: the rows scored {lang} differently ({how} vs {row_normalization(b, lang)})"}
    pairs = paired_from_samples(a.get("samples") or [], b.get("samples") or [], lang, how)
    left = {k: pairs[k] for k in ("only_a", "only_b", "reference_differs")}
    if pairs["shared"]:
        d = paired_difference(pairs["a_errors"], pairs["b_errors"], pairs["words"], resamples=resamples, seed=seed)
        # The errors no utterance showed are bounded by the rule of three, not by 0: identical transcripts
        # of 84 words do not show that int8 costs less than 2 points.
        unseen = rule_of_three(d["words"], d["confidence"])
        low, high = d["bootstrap_ci"] = d["ci"]
        pairs_ab = list(zip(pairs["a_errors"], pairs["b_errors"]))
        d["ci"] = (low - (0 if any(eb < ea for ea, eb in pairs_ab) else unseen),
                   high + (0 if any(eb > ea for ea, eb in pairs_ab) else unseen))
        out = [f"{n} {what}" for what, n in (("only in the first", left["only_a"]), ("only in the second", left["only_b"]),
                                             ("with a changed reference", left["reference_differs"])) if n]
        return {**d, **left, "note": f"paired on {d['utterances']} shared utterances, {d['words']} words"
                + (f"; left out: {', '.join(out)}" if out else "")}
    ca, cb = (sample_counts(r.get("samples") or [], lang, how) for r in (a, b))
    if not (ca["words"] and cb["words"]):
        return {**_nan_difference(method="none", words=0), **left, "note": "not compared: no per-utterance transcripts"}
    d = unpaired_difference(ca["errors"], ca["words"], cb["errors"], cb["words"], resamples=resamples, seed=seed)
    return {**d, **left, "words": min(d["words_a"], d["words_b"]),
            "note": f"unpaired: the runs share no utterance ({d['utterances_a']} vs {d['utterances_b']} utterances)"}


def budget_verdict(difference: Mapping[str, Any], allowed: float) -> dict[str, Any]:
    """A `wer_increase_vs`-style limit on a row_difference: {"verdict": met | failed | insufficient
    data, "needed": words_needed(...) (how much speech would settle an insufficient one)}."""
    utterances = difference.get("utterances", difference.get("utterances_b"))
    return {"verdict": verdict_within(difference["ci"], allowed),
            "needed": words_needed(difference["increase"], difference["ci"], difference.get("words") or 0, allowed,
                                   utterances=utterances)}
