"""WER/CER with Whisper's normalizers, latency statistics."""

from __future__ import annotations

import math

import pytest

from harness.analyze import scoring as metrics


def test_corpus_wer_is_total_errors_over_total_reference_words() -> None:
    refs = ["the cat sat on the mat", "hello world"]
    hyps = ["the cat sat on a mat", "hello"]
    rates = metrics.error_rates(refs, hyps, "en")
    # 1 substitution + 1 deletion over 8 words (not the mean of per-sample WERs, 0.333).
    assert rates["wer"] == pytest.approx(2 / 8)
    assert rates["words"] == 8
    assert (rates["substitutions"], rates["deletions"], rates["insertions"]) == (1, 1, 0)


def test_english_normalizer_forgives_case_punctuation_numbers_and_contractions() -> None:
    ref = "Mr. Quilter is the apostle of the middle classes, and we're glad to welcome his gospel."
    hyp = "mister quilter is the apostle of the middle-classes and we are glad to welcome his gospel"
    assert metrics.error_rates([ref], [hyp], "en")["wer"] == 0.0
    assert metrics.error_rates(["I have four cats"], ["I have 4 cats."], "en")["wer"] == 0.0


def test_portuguese_keeps_diacritics_and_drops_punctuation() -> None:
    assert metrics.normalize("Olá, você está bem? [risos]", "pt") == "olá você está bem"
    rates = metrics.error_rates(["Ação rápida"], ["acao rápida"], "pt")
    assert rates["wer"] == pytest.approx(0.5)  # a missing diacritic is a different word
    assert rates["cer"] > 0


N = metrics.Normalization


@pytest.mark.parametrize(("ref", "hyp", "lang", "how", "wer"), [
    # upper-case reference, contractions, British spelling: the English normalizer forgives all three
    ("MR QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES", "Mr. Quilter is the apostle of the middle classes.", "en", None, 0.0),
    ("I don't think we're late", "I do not think we are late", "en", None, 0.0),
    ("the colour of the theatre", "the color of the theater", "en", None, 0.0),
    # ... but not when normalization is off: case and punctuation count
    ("Hello world", "hello world.", "en", N("none"), 1.0),
    # digits vs words: English equates them; Portuguese only with numbers: spell-out
    ("twenty one people at seven", "21 people at 7", "en", None, 0.0),
    ("Chegamos às sete com dezesseis pessoas", "Chegamos às 7 com 16 pessoas", "pt", None, 2 / 6),
    ("Chegamos às sete com dezesseis pessoas", "Chegamos às 7 com 16 pessoas", "pt", N("whisper-basic", numbers="spell-out"), 0.0),
    ("Custa mil reais", "Custa 1.000 reais", "pt", N("whisper-basic", numbers="spell-out"), 0.0),
    ("três vírgula cinco quilos", "3,5 quilos", "pt", N("whisper-basic", numbers="spell-out"), 0.0),
    # Portuguese diacritics: kept by default (a different word), removable
    ("Vamos a São Paulo amanhã", "vamos a sao paulo amanha", "pt", None, 2 / 5),
    ("Vamos a São Paulo amanhã", "vamos a sao paulo amanha", "pt", N("whisper-basic", remove_diacritics=True), 0.0),
    ("Ação, já!", "ação já", "pt", N("whisper-basic"), 0.0),
])
def test_normalization_on_tricky_cases(ref: str, hyp: str, lang: str, how: metrics.Normalization | None, wer: float) -> None:
    assert metrics.error_rates([ref], [hyp], lang, how)["wer"] == pytest.approx(wer)


def test_spelled_out_numbers_follow_the_language() -> None:
    spell = N("whisper-basic", numbers="spell-out")
    assert metrics.normalize("16 de 2024", "pt", spell) == "dezesseis de dois mil e vinte e quatro"
    assert metrics.normalize("1,000 people", "en", N("none", numbers="spell-out")) == "one thousand people"
    assert metrics.num2words_locale("pt") == "pt_BR"
    assert metrics.num2words_locale("yo") is None


def test_empty_references_are_left_out() -> None:
    assert math.isnan(metrics.error_rates(["[music]"], ["la la"], "pt")["wer"])
    assert metrics.sample_wer("...", "anything", "pt") is None


def test_percentiles_and_spread() -> None:
    values = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert metrics.percentile(values, 50) == 3.0
    assert metrics.percentile(values, 95) == pytest.approx(4.8)
    assert metrics.percentile([7.0], 95) == 7.0
    assert metrics.coefficient_of_variation([1.0]) is None
    assert metrics.median_cv([[1.0, 1.0], [1.0, 3.0], [2.0, 2.0]]) == 0.0
