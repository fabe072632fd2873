"""The report's per-utterance drill-down: which utterances decide the accuracy difference between the
recommended configuration and its neighbour (the same configuration in float32; for a float32 one, the
next larger model, else the same configuration at another quantization), with the word diff of each
hypothesis against the reference. With ten clips per language one recording can decide which
configuration looks more accurate; this is where a reader sees it.
"""

from __future__ import annotations

from typing import Any

import jiwer

from harness import store
from harness.analyze import uncertainty
from harness.analyze.recommend import reference_row
from harness.analyze.scoring import normalize
from harness.plan.search import model_rank

REFERENCE_QUANTIZATION = "float32"
TOP = 5  # utterances shown per language


def _settings(row: dict[str, Any]) -> tuple[Any, ...]:
    c = row["config"]
    return (c["backend"], c["threads"], c["cpu_pinning"]["requested"], str(c.get("chunking")), c.get("beam_size"))


def neighbour(chosen: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The row the drill-down compares `chosen` with (see the module docstring), or None."""
    ok = [r for r in rows if r["status"] == "ok" and not r.get("profiler") and r["run_id"] != chosen["run_id"]]
    if chosen["config"]["quantization"] != REFERENCE_QUANTIZATION:
        if (ref := reference_row(chosen, ok, REFERENCE_QUANTIZATION)) is not None:
            return ref
    rank = model_rank(chosen["config"]["model"])
    larger = [r for r in ok if _settings(r) == _settings(chosen) and r["config"]["quantization"] == chosen["config"]["quantization"]
              and rank is not None and (model_rank(r["config"]["model"]) or 0) > rank]
    if larger:
        return min(larger, key=lambda r: model_rank(r["config"]["model"]) or 0)
    same = [r for r in ok if _settings(r) == _settings(chosen) and r["config"]["model"] == chosen["config"]["model"]]
    return same[0] if same else None


def word_diff(reference: str, hypothesis: str, lang: str, how: Any = None) -> list[dict[str, str]]:
    """The normalized hypothesis as tokens against the normalized reference: {"text", "kind"} with kind
    equal, substitute ("text" is the hypothesis's word, "ref" the reference's), insert (a word the
    reference does not have) or delete (a reference word the hypothesis lacks, as "ref")."""
    ref, hyp = normalize(reference, lang, how), normalize(hypothesis, lang, how)
    if not ref:
        return [{"kind": "insert", "text": w, "ref": ""} for w in hyp.split()]
    out = jiwer.process_words(ref, hyp)
    r, h = out.references[0], out.hypotheses[0]
    tokens = []
    for chunk in out.alignments[0]:
        refs, hyps = r[chunk.ref_start_idx:chunk.ref_end_idx], h[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type == "delete":
            tokens += [{"kind": "delete", "text": "", "ref": w} for w in refs]
        elif chunk.type == "insert":
            tokens += [{"kind": "insert", "text": w, "ref": ""} for w in hyps]
        else:
            kind = "equal" if chunk.type == "equal" else "substitute"
            tokens += [{"kind": kind, "text": hw, "ref": rw} for rw, hw in zip(refs, hyps)]
    return tokens


def drilldown(chosen: dict[str, Any] | None, rows: list[dict[str, Any]], languages: list[str]) -> dict[str, Any] | None:
    """{"chosen", "neighbour" (names), "languages": [{"lang", "difference" (row_difference of chosen over
    neighbour), "utterances": the TOP with the largest |error difference|: id, reference, errors and
    word diff of each side, "points" (its share of the increase)}]} or None without a neighbour."""
    other = neighbour(chosen, rows) if chosen is not None else None
    if chosen is None or other is None:
        return None
    out = []
    for lang in languages:
        d = uncertainty.row_difference(other, chosen, lang)
        if d["method"] != "paired":
            continue
        how = uncertainty.row_normalization(chosen, lang)
        pairs = uncertainty.paired_from_samples(other["samples"], chosen["samples"], lang, how)
        by_id = [{s["id"]: s for s in r["samples"] if s["lang"] == lang} for r in (chosen, other)]
        ranked = sorted(zip(pairs["ids"], pairs["b_errors"], pairs["a_errors"]), key=lambda t: -abs(t[1] - t[2]))
        utterances = []
        for i, mine, theirs in ranked[:TOP]:
            if mine == theirs:
                break
            ref = by_id[0][i]["reference"]
            utterances.append({"id": i, "reference": ref, "points": 100 * (mine - theirs) / d["words"],
                               "sides": [{"errors": e, "diff": word_diff(ref, s[i]["hypothesis"], lang, how)}
                                         for e, s in ((mine, by_id[0]), (theirs, by_id[1]))]})
        out.append({"lang": lang, "difference": d, "utterances": utterances})
    return {"chosen": store.short_name(chosen), "neighbour": store.short_name(other), "languages": out} if out else None
