"""Pure measurement math: normalized corpus WER/CER per language, latency statistics, RTF."""

from __future__ import annotations

import re
import statistics
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from functools import cache

import jiwer

NORMALIZERS = ("whisper-english", "whisper-basic", "none")
NUMBER_MODES = ("keep", "spell-out")
# num2words' locale for a Whisper language code where the two differ (Brazilian Portuguese is the
# project's Portuguese: "dezesseis", not European "dezasseis").
NUM2WORDS_LOCALE = {"pt": "pt_BR"}
# A number as written: 7, 2024, 1.000 / 1,000 (thousands), 3,5 / 3.5 (decimal).
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


@dataclass(frozen=True)
class Normalization:
    """How references and hypotheses of one language are made comparable before scoring.

    `normalizer`: Whisper's English normalizer (case, punctuation, British/American spelling,
    contractions, spelled-out numbers -> digits), Whisper's basic normalizer (lowercase, punctuation
    and bracketed text removed, diacritics kept), or none (whitespace only: exact wording and case).
    `remove_diacritics`: "São" = "Sao". `numbers: spell-out` writes digits as words in the language
    first ("7" = "sete"); the English normalizer already equates "four" and "4".
    """

    normalizer: str
    remove_diacritics: bool = False
    numbers: str = "keep"

    def to_json(self) -> dict[str, object]:
        return asdict(self)


def default_normalization(lang: str) -> Normalization:
    return Normalization("whisper-english" if lang == "en" else "whisper-basic")


def num2words_locale(lang: str) -> str | None:
    """num2words' locale for a language, or None when it cannot spell numbers in it."""
    from num2words import CONVERTER_CLASSES

    locale = NUM2WORDS_LOCALE.get(lang, lang)
    return locale if locale in CONVERTER_CLASSES else None


@cache
def _whisper_normalizer(name: str) -> Callable[[str], str]:
    if name == "whisper-english":
        from whisper_normalizer.english import EnglishTextNormalizer

        return EnglishTextNormalizer()
    from whisper_normalizer.basic import BasicTextNormalizer

    return BasicTextNormalizer()


def _spell_out_numbers(text: str, lang: str) -> str:
    from num2words import num2words

    locale = num2words_locale(lang)
    if locale is None:
        raise ValueError(f"num2words cannot spell numbers in {lang!r}")
    # English writes 1,000.5; Portuguese (and most others) 1.000,5.
    thousands, decimal = (",", ".") if lang == "en" else (".", ",")
    grouped = re.compile(rf"\d{{1,3}}(?:{re.escape(thousands)}\d{{3}})+")

    def words(match: re.Match[str]) -> str:
        digits = match.group()
        if grouped.fullmatch(digits):
            return num2words(int(digits.replace(thousands, "")), lang=locale)
        whole, sep, fraction = digits.partition(decimal)
        if sep and whole.isdigit() and fraction.isdigit():
            return num2words(Decimal(f"{whole}.{fraction}"), lang=locale)
        return " ".join(num2words(int(part), lang=locale) for part in re.split(r"[.,]", digits))

    return _NUMBER.sub(lambda m: f" {words(m)} ", text)


def _strip_diacritics(text: str) -> str:
    return unicodedata.normalize("NFC", "".join(
        ch for ch in unicodedata.normalize("NFKD", text) if unicodedata.category(ch) != "Mn"))


def normalize(text: str, lang: str, how: Normalization | None = None) -> str:
    how = how or default_normalization(lang)
    if how.numbers == "spell-out":
        text = _spell_out_numbers(text, lang)
    if how.normalizer != "none":
        text = _whisper_normalizer(how.normalizer)(text)
    if how.remove_diacritics:
        text = _strip_diacritics(text)
    return " ".join(text.split())


def error_rates(references: Sequence[str], hypotheses: Sequence[str], lang: str,
                how: Normalization | None = None) -> dict[str, float | int]:
    """Corpus-level WER and CER: total (S + D + I) / total reference words (characters)."""
    pairs = [(normalize(r, lang, how), normalize(h, lang, how))
             for r, h in zip(references, hypotheses, strict=True)]
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


def sample_wer(reference: str, hypothesis: str, lang: str, how: Normalization | None = None) -> float | None:
    ref = normalize(reference, lang, how)
    return jiwer.wer(ref, normalize(hypothesis, lang, how)) if ref else None


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
