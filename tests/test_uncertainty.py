"""Bootstrap confidence intervals for corpus WER, the paired comparison, verdicts and sample sizes."""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter
from fractions import Fraction

import numpy as np
import pytest

from harness.analyze import scoring as metrics
from harness.analyze import uncertainty as u

# ---- per-utterance counts ----


@pytest.mark.parametrize("lang", ["en", "pt"])
def test_per_utterance_counts_add_up_to_error_rates_exactly(lang: str) -> None:
    refs = ["The cat sat on the mat.", "Hello world", "[risos]", "Mr. Brown is the owner of the corner shop",
            "Ação rápida, São Paulo!", "I have four cats"]
    hyps = ["the cat sat on a mat", "hello", "something", "mister brown is an owner of the corner-shop and",
            "acao rápida são paulo", ""]
    rates = metrics.error_rates(refs, hyps, lang)
    words = u.utterance_counts(refs, hyps, lang)
    chars = u.utterance_counts(refs, hyps, lang, unit="characters")
    assert len(words) == len(chars) == 5  # "[risos]" normalizes to nothing and is left out, as error_rates does
    assert sum(e for e, _ in words) / sum(w for _, w in words) == rates["wer"]
    assert sum(w for _, w in words) == rates["words"]
    assert sum(e for e, _ in chars) / sum(w for _, w in chars) == rates["cer"]


def test_utterance_counts_reject_an_unknown_unit() -> None:
    with pytest.raises(ValueError, match="unit"):
        u.utterance_counts(["a"], ["a"], "en", unit="phonemes")


# ---- the bootstrap against exact answers ----


def test_two_utterances_by_hand() -> None:
    # Utterance 1: 1 error / 4 words, utterance 2: 3 / 6. A resample of two draws is {1,1} = 2/8
    # (probability 1/4), {1,2} = 4/10 (1/2) or {2,2} = 6/12 (1/4): the 2.5 % and 97.5 % points of
    # that distribution are 0.25 and 0.5, which 10,000 resamples hit exactly.
    assert u.bootstrap_ci([1, 3], [4, 6]) == (0.25, 0.5)


def _exact_percentile(errors: list[int], words: list[int], q: float) -> tuple[float, float]:
    """The q-quantile of the exact bootstrap distribution (all n^n equally likely draws) and how far
    the cumulative probability is from q on either side of it."""
    n = len(errors)
    dist: Counter[Fraction] = Counter()
    for draw in itertools.product(range(n), repeat=n):
        dist[Fraction(sum(errors[i] for i in draw), sum(words[i] for i in draw))] += Fraction(1, n ** n)
    cdf = Fraction(0)
    for value in sorted(dist):
        before, cdf = cdf, cdf + dist[value]
        if cdf >= q:
            return float(value), float(min(q - before, cdf - q))
    raise AssertionError("unreachable")


def test_matches_exhaustive_enumeration_of_a_tiny_corpus() -> None:
    errors, words = [0, 1, 3, 6], [5, 8, 10, 12]
    (low, low_margin), (high, high_margin) = (_exact_percentile(errors, words, q) for q in (0.025, 0.975))
    # The exact quantiles sit > 0.5 % of probability away from a step, i.e. > 10 standard errors of the
    # empirical distribution function at 100,000 resamples: the bootstrap must land on them exactly.
    assert min(low_margin, high_margin) > 0.005
    assert (low, high) == (1 / 13, 18 / 41)
    assert u.bootstrap_ci(errors, words, resamples=100_000, seed=3) == (low, high)


def test_same_seed_same_interval_and_another_seed_another() -> None:
    rng = random.Random(7)
    words = [rng.randint(3, 30) for _ in range(40)]
    errors = [rng.randint(0, w // 2) for w in words]
    first = u.bootstrap_ci(errors, words, seed=11)
    assert u.bootstrap_ci(errors, words, seed=11) == first
    assert u.bootstrap_ci(list(errors), tuple(words), seed=11) == first
    assert u.bootstrap_ci(errors, words, seed=12) != first
    low, high = first
    assert low < sum(errors) / sum(words) < high


def test_degenerate_corpora() -> None:
    low, high = u.bootstrap_ci([], [])
    assert math.isnan(low) and math.isnan(high)
    assert u.bootstrap_ci([2], [7]) == (2 / 7, 2 / 7)  # one utterance: no spread to see, not certainty
    assert u.bootstrap_ci([0, 0, 0], [4, 5, 6]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="reference word"):
        u.bootstrap_ci([1, 0], [3, 0])
    with pytest.raises(ValueError, match="same length"):
        u.bootstrap_ci([1, 0], [3])
    with pytest.raises(ValueError, match="confidence"):
        u.bootstrap_ci([1], [3], confidence=95)


def test_a_higher_confidence_gives_a_wider_interval() -> None:
    errors, words = [0, 1, 3, 6, 2, 0, 4], [5, 8, 10, 12, 9, 7, 11]
    (l90, h90), (l99, h99) = (u.bootstrap_ci(errors, words, confidence=c) for c in (0.90, 0.99))
    assert l99 <= l90 and h99 >= h90 and (h99 - l99) > (h90 - l90)


# ---- the paired comparison ----


def test_one_long_utterance_decides_the_difference() -> None:
    # Nine 10-word clips where a and b make the same single error, one 200-word clip where b makes 50
    # errors and a 10. The point estimate says b is 40 / 290 = 13.8 points worse, but a resample
    # leaves the long clip out with probability 0.9^10 = 0.349 and then the two are identical: the
    # interval reaches down to exactly 0, and "a is better" holds in only 1 - 0.9^10 of resamples.
    words = [10] * 9 + [200]
    a = [1] * 9 + [10]
    b = [1] * 9 + [50]
    d = u.paired_difference(a, b, words)
    assert d["increase"] == pytest.approx(40 / 290)
    assert (d["wer_a"], d["wer_b"], d["words"], d["utterances"]) == (19 / 290, 59 / 290, 290, 10)
    low, high = d["ci"]
    assert low == 0.0 and high > d["increase"]
    assert d["p_a_better"] == pytest.approx(1 - 0.9 ** 10, abs=0.02)
    assert d["p_b_better"] == 0.0
    assert u.verdict_within(d["ci"], 0.02) == "insufficient data"


def _hard_and_easy(seed: int = 5) -> tuple[list[int], list[int], list[int]]:
    """12 utterances of very different difficulty; b makes exactly one more error than a on each."""
    rng = random.Random(seed)
    words = [rng.randint(8, 30) for _ in range(12)]
    a = [rng.choice([0, 0, 1, w // 2, w // 3]) for w in words]
    return a, [e + 1 for e in a], words


def test_consistently_worse_excludes_zero_and_pairing_is_narrower() -> None:
    a, b, words = _hard_and_easy()
    paired = u.paired_difference(a, b, words)
    assert paired["increase"] == pytest.approx(12 / sum(words))
    assert paired["ci"][0] > 0 and paired["p_a_better"] == 1.0
    unpaired = u.unpaired_difference(a, words, b, words)
    assert unpaired["increase"] == pytest.approx(paired["increase"])
    # The unpaired interval counts the spread between hard and easy clips twice instead of cancelling
    # it: here it is several times wider and cannot even tell which system is better.
    paired_width = paired["ci"][1] - paired["ci"][0]
    unpaired_width = unpaired["ci"][1] - unpaired["ci"][0]
    assert unpaired_width > 3 * paired_width
    assert unpaired["ci"][0] < 0 < unpaired["ci"][1]
    assert 0.5 < unpaired["p_a_better"] < 0.95


def test_identical_systems_tie_in_every_resample() -> None:
    d = u.paired_difference([1, 0, 3], [1, 0, 3], [5, 6, 7])
    assert (d["increase"], d["ci"], d["p_a_better"], d["p_b_better"]) == (0.0, (0.0, 0.0), 0.0, 0.0)


def test_paired_reproducible_and_empty() -> None:
    a, b, words = _hard_and_easy(9)
    assert u.paired_difference(a, b, words, seed=4) == u.paired_difference(a, b, words, seed=4)
    empty = u.paired_difference([], [], [])
    assert empty["utterances"] == 0 and math.isnan(empty["increase"]) and math.isnan(empty["ci"][0])
    one_side = u.unpaired_difference([], [], [1], [4])
    assert math.isnan(one_side["ci"][0]) and one_side["wer_b"] == 0.25


def _sample(i: str, lang: str, ref: str, hyp: str | None) -> dict:
    return {"id": i, "lang": lang, "audio_s": 2.0, "reference": ref, "hypothesis": hyp}


def test_paired_from_samples_pairs_by_id_and_counts_what_it_leaves_out() -> None:
    a = [_sample("s1", "pt", "Olá, tudo bem?", "olá tudo bem"),
         _sample("s2", "pt", "Leve o guarda chuva se chover", "leve guarda chuva se chover"),
         _sample("s3", "pt", "[risos]", "haha"),
         _sample("s4", "pt", "só em a", "só em a"),
         _sample("s5", "pt", "mudou depois", "mudou depois"),
         _sample("e1", "en", "hello", "hello")]
    b = [_sample("s2", "pt", "Leve o guarda chuva se chover", "leve o guarda chuva se chove"),  # order differs
         _sample("s1", "pt", "Olá tudo bem", "olá tudo mal"),  # same reference once normalized
         _sample("s3", "pt", "[risos]", "ha"),
         _sample("s5", "pt", "mudou depois disso", "mudou depois disso"),  # the dataset changed
         _sample("s6", "pt", "só em b", "só em b")]
    p = u.paired_from_samples(a, b, "pt")
    assert p["ids"] == ["s1", "s2"] and p["shared"] == 2
    assert (p["a_errors"], p["b_errors"], p["words"]) == ([0, 1], [1, 1], [3, 6])
    assert (p["only_a"], p["only_b"], p["reference_differs"]) == (1, 1, 1)
    assert p["excluded_a"]["empty_reference"] == 1 and p["excluded_b"]["empty_reference"] == 1
    d = u.paired_difference(p["a_errors"], p["b_errors"], p["words"])
    assert d["increase"] == pytest.approx(1 / 9)
    with pytest.raises(ValueError, match="twice"):
        u.paired_from_samples(a + a[:1], b, "pt")


def test_corpus_rate_ci_from_row_samples() -> None:
    samples = [_sample("e1", "en", "the cat sat on the mat", "the cat sat on a mat"),
               _sample("e2", "en", "hello world", "hello"), _sample("e3", "en", "good morning", None),
               _sample("p1", "pt", "bom dia", "bom dia")]
    got = u.corpus_rate_ci(samples, "en")
    assert got["rate"] == metrics.error_rates(["the cat sat on the mat", "hello world"],
                                              ["the cat sat on a mat", "hello"], "en")["wer"]
    assert (got["utterances"], got["words"], got["excluded"]["missing_text"]) == (2, 8, 1)
    assert got["ci"] == u.bootstrap_ci([1, 1], [6, 2])


# ---- verdicts and how much more speech ----


@pytest.mark.parametrize(("ci", "verdict"), [
    ((-0.01, 0.015), "met"), ((-0.01, 0.02), "met"),          # upper bound at or under the limit
    ((0.021, 0.05), "failed"),                                 # lower bound past it
    ((0.02, 0.05), "insufficient data"), ((0.0, 0.03), "insufficient data"),
    ((math.nan, math.nan), "insufficient data"),
])
def test_verdict_within(ci: tuple[float, float], verdict: str) -> None:
    assert u.verdict_within(ci, 0.02) == verdict


def test_words_needed_is_zero_once_settled_and_none_on_the_limit() -> None:
    settled = u.words_needed(0.0, (-0.01, 0.01), 500, 0.02, utterances=50)
    assert (settled["more_words"], settled["more_utterances"], settled["expected_verdict"]) == (0, 0, "met")
    on_limit = u.words_needed(0.02, (0.0, 0.04), 500, 0.02)
    assert on_limit["total_words"] is None and "no amount" in on_limit["note"]
    too_close = u.words_needed(0.019999, (0.0, 0.04), 500, 0.02)
    assert too_close["total_words"] is None and "more than" in too_close["note"]
    nothing = u.words_needed(math.nan, (math.nan, math.nan), 0, 0.02)
    assert nothing["total_words"] is None and nothing["note"] == "no data"


def test_words_needed_formula_and_monotonic() -> None:
    # Upper side 0.03 above the estimate, 0.01 of room: (0.03 / 0.01)^2 = 9 times the words.
    got = u.words_needed(0.01, (-0.02, 0.04), 300, 0.02, utterances=30)
    assert (got["total_words"], got["more_words"], got["more_utterances"], got["expected_verdict"]) == (2700, 2400, 240, "met")
    # Past the limit: the lower side counts, and the verdict would be "failed".
    assert u.words_needed(0.05, (0.01, 0.08), 300, 0.02)["expected_verdict"] == "failed"
    totals = [u.words_needed(x, (x - 0.03, x + 0.03), 300, 0.02)["total_words"] for x in (-0.005, 0.0, 0.01, 0.015, 0.019)]
    assert all(isinstance(t, int) and t > 0 for t in totals)
    assert totals == sorted(totals) and len(set(totals)) == len(totals)  # closer to the limit: more words
    wider = [u.words_needed(0.0, (-h, h), 300, 0.02)["total_words"] for h in (0.025, 0.03, 0.05)]
    assert wider == sorted(wider) and len(set(wider)) == 3


@pytest.mark.parametrize(("allowed", "expected"), [(0.07, "met"), (0.03, "failed")])
def test_words_needed_prediction_settles_a_larger_corpus_like_this_one(allowed: float, expected: str) -> None:
    # Six utterances, b 5 points worse: the interval (about 1.5 to 9 points) straddles both limits.
    # Repeating the same utterances until the corpus has the predicted number of words (same per-word
    # spread, same point estimate) settles it as predicted; half as many does not.
    a, b, words = [2, 0, 1, 3, 0, 1], [2, 1, 1, 4, 0, 2], [12, 8, 10, 15, 6, 9]
    d = u.paired_difference(a, b, words)
    assert u.verdict_within(d["ci"], allowed) == "insufficient data"
    need = u.words_needed(d["increase"], d["ci"], d["words"], allowed, utterances=6)
    assert need["expected_verdict"] == expected
    assert need["more_utterances"] == math.ceil(need["more_words"] / 10)  # 10 words per utterance
    times = math.ceil(need["total_words"] / d["words"])
    assert u.verdict_within(u.paired_difference(a * times, b * times, words * times)["ci"], allowed) == expected
    half = max(1, times // 2)
    assert u.verdict_within(u.paired_difference(a * half, b * half, words * half)["ci"], allowed) == "insufficient data"


def test_words_for_half_width_agrees_with_the_bootstrap_and_scales() -> None:
    rng = np.random.default_rng(2)
    words = rng.integers(4, 25, 300)
    errors = rng.binomial(words, rng.choice([0.02, 0.1, 0.4], 300))
    got = u.words_for_half_width(errors, words, 0.01)
    low, high = u.bootstrap_ci(errors, words)
    assert got["current_half_width"] == pytest.approx((high - low) / 2, rel=0.15)
    assert got["words_needed"] == math.ceil(got["utterances_needed"] * got["words_per_utterance"])
    at_current = u.words_for_half_width(errors, words, got["current_half_width"])
    assert at_current["utterances_needed"] in (300, 301)  # the observed size gives the observed width
    half = u.words_for_half_width(errors, words, 0.005)
    assert half["utterances_needed"] == pytest.approx(4 * got["utterances_needed"], rel=0.01)
    # Differences b - a size a paired comparison (negative values allowed).
    diff = u.words_for_half_width(list(rng.integers(-1, 2, 300)), words, 0.01)
    assert diff["utterances_needed"] > 0


def test_words_for_half_width_without_spread_or_data() -> None:
    assert u.words_for_half_width([0, 0, 0], [5, 6, 7])["utterances_needed"] is None
    assert u.words_for_half_width([1], [5])["utterances_needed"] is None
    with pytest.raises(ValueError, match="half_width"):
        u.words_for_half_width([1, 2], [5, 6], 0)
