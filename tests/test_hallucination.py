"""Per-utterance hallucination flags: loops, over-generation, text past the end of the audio."""

from __future__ import annotations

import pytest

from harness.analyze import hallucination as h
from harness.analyze.scoring import Normalization


@pytest.mark.parametrize(("reference", "hypothesis", "lang"), [
    ("Thank you.", "Thank you. Thank you. Thank you. Thank you.", "en"),
    ("the end", "the the the the the", "en"),
    ("I went to the store and bought milk.",
     "I went to the store and bought milk. I went to the store and bought milk.", "en"),  # a duplicated segment
    ("Obrigado pela atenção.", "Obrigado. Obrigado. Obrigado. Obrigado.", "pt"),
    ("O café da manhã é servido às sete", "O café da manhã é servido, é servido, é servido às sete", "pt"),
    (None, "you know you know you know", "en"),  # no reference: the rule alone
])
def test_loops_are_flagged(reference: str | None, hypothesis: str, lang: str) -> None:
    assert "repetition" in h.flags(reference, hypothesis, lang)


@pytest.mark.parametrize(("reference", "hypothesis", "lang"), [
    ("No, no, I said the other one.", "No, no, I said the other one.", "en"),
    ("It was very very good.", "It was very, very good.", "en"),
    ("no no no, not that", "no no no not that", "en"),  # three copies of a word is speech
    ("Não, não, eu não sei.", "Não, não, eu não sei.", "pt"),
    ("Ele disse que que era tarde", "ele disse que que era tarde", "pt"),
    ("the cat sat on the mat", "the cat sat on the mat and the dog sat on the rug", "en"),  # repeated words, not a loop
    ("Help! Help! Help! Help!", "help help help help", "en"),  # the speaker really said it four times
    ("thank you thank you thank you", "thank you thank you thank you", "en"),
])
def test_normal_repeats_are_not_flagged(reference: str, hypothesis: str, lang: str) -> None:
    assert "repetition" not in h.flags(reference, hypothesis, lang)


def test_loops_report_the_phrase_and_the_copies() -> None:
    assert h.loops("thank you. thank you. thank you. thank you.", "en") == [(("thank", "you"), 4, 0)]
    # Only the shortest repeating unit: "no no no no no" is one word five times, not "no no" twice.
    assert h.runs("no no no no no".split()) == [(("no",), 5, 0)]
    # A loop read from another starting word is the same loop as the reference's: flagged only when
    # the hypothesis has more copies in a row than the reference.
    said_three_times = "thank you thank you thank you"
    assert h.loops("you thank you thank you thank you", "en", reference=said_three_times) == []
    assert h.loops("you thank you thank you thank you thank", "en", reference=said_three_times) == [
        (("you", "thank"), 4, 0)]


def test_an_earlier_passage_said_again_is_an_echo() -> None:
    ref = "The quick brown fox jumps over the lazy dog, and then it runs away into the dark forest."
    tail = " The quick brown fox jumps over the lazy dog."  # re-emitted after the speech ended
    assert h.flags(ref, ref + tail, "en") == ["repetition"]
    assert h.echoes(ref + tail, "en", ref)[0] == (("the", "quick", "brown", "fox", "jumps", "over"), 2, 1)
    assert h.flags(ref, ref, "en") == []
    # The speaker said the line twice: the hypothesis saying it twice is no echo.
    twice = "I will see you at the station tomorrow. Yes, I will see you at the station tomorrow."
    assert h.flags(twice, twice, "en") == []
    # Shorter shared phrases are ordinary ("at the end of the" twice).
    said = "At the end of the day we went home. At the end of the week we rested."
    assert h.flags(said.replace("went", "walked"), said, "en") == []
    assert h.flags(None, ref + tail, "en") == []  # an echo needs the reference to tell


def test_over_generation() -> None:
    ref = "a reunião da escola é na quarta de manhã"  # 9 words: more than 1.5 * 9 + 5 = 18.5 is too many
    assert h.flags(ref, ref + " " + " ".join(f"palavra{i}" for i in range(9)), "pt") == []  # 18 words
    assert h.flags(ref, ref + " " + " ".join(f"palavra{i}" for i in range(10)), "pt") == ["over-generation"]  # 19
    assert h.flags("hi", "hello there how are you all doing", "en") == ["over-generation"]  # 7 > 1.5 * 1 + 5
    assert h.flags("hi", "hello there how are you all", "en") == []  # a short reference allows a few extra words
    assert h.flags(None, "so many words in a hypothesis without any reference to hold it against", "en") == []


def test_past_audio_end_only_with_segment_times() -> None:
    assert h.flags("hello", "hello", "en", audio_s=3.0) == []
    assert h.flags("hello", "hello", "en", audio_s=3.0, segment_end_s=3.8) == []  # within 1 s
    assert h.flags("hello", "hello", "en", audio_s=3.0, segment_end_s=[1.2, 4.5]) == ["past-audio-end"]
    assert h.flags("hello", "hello", "en", segment_end_s=9.0) == []  # no duration: nothing to compare


def test_flags_follow_the_scoring_normalization() -> None:
    # Without normalization, "Obrigado." and "obrigado" are different words: no loop of four.
    text = "Obrigado. obrigado Obrigado. obrigado"
    assert h.flags(None, text, "pt") == ["repetition"]
    assert h.flags(None, text, "pt", how=Normalization("none")) == []


def test_count_flags_over_row_samples() -> None:
    samples = [
        {"id": "e1", "lang": "en", "audio_s": 2.0, "reference": "Thank you.", "hypothesis": "Thank you. " * 5},
        {"id": "e2", "lang": "en", "audio_s": 2.0, "reference": "very very good", "hypothesis": "very very good"},
        {"id": "e3", "lang": "en", "audio_s": 2.0, "reference": "hi", "hypothesis": "hi",
         "segments": [{"start": 0.0, "end": 1.0}, {"start": 1.0, "end": 4.5}]},
        {"id": "p1", "lang": "pt", "audio_s": 3.0, "reference": "bom dia",
         "hypothesis": "bom dia a todos vocês que estão aqui hoje conosco nesta manhã", "segment_end_s": 2.9},
        {"id": "p2", "lang": "pt", "audio_s": 3.0, "reference": "bom dia", "hypothesis": None},
    ]
    assert h.count_flags(samples) == {"samples": 4, "flagged": 3, "repetition": 1, "over-generation": 2,
                                      "past-audio-end": 1}
    assert h.count_flags(samples, lang="pt") == {"samples": 1, "flagged": 1, "repetition": 0, "over-generation": 1,
                                                 "past-audio-end": 0}
    per_lang = {"en": Normalization("none")}
    assert h.count_flags(samples, per_lang, lang="en")["repetition"] == 1
    assert h.count_flags([]) == {"samples": 0, "flagged": 0, "repetition": 0, "over-generation": 0, "past-audio-end": 0}
