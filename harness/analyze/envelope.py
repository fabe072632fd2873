"""What a measured configuration is valid for: the longest request it was measured on, and how its
memory grows with the length of a request.

With `max_audio_s` (the row's `data.max_audio_s` and its `probes`, harness.data.probe) the peak covers a
request of that length: "valid for requests up to N s". Without, the longest clip measured bounds it.
Where a configuration was measured at 3 or more lengths (in 30-second steps: short clips are one
length), the least-squares slope of the memory sampled while each was transcribed against its length
says how much more a longer request needs, in MiB per minute of audio.
"""

from __future__ import annotations

from typing import Any

LENGTH_STEP_S = 30
MIN_LENGTHS = 3
FLAT_MIB_PER_MINUTE = 1.0  # below it, memory did not grow with the length measured


def envelope(row: dict[str, Any]) -> dict[str, Any]:
    """{max_audio_s (None without a probe), longest_clip_s, probe_audio_s, clips_peak_rss_mb,
    probe_peak_rss_mb, lengths, mib_per_minute (None under MIN_LENGTHS lengths), valid_for, text}."""
    samples = [s for s in row.get("samples") or [] if s.get("audio_s")]
    probes = [p for p in row.get("probes") or [] if p.get("audio_s")]
    max_audio_s = (row.get("data") or {}).get("max_audio_s") if probes else None
    points = [(s["audio_s"] / 60, s["peak_rss_mb"]) for s in [*samples, *probes] if s.get("peak_rss_mb") is not None]
    lengths = len({round(minutes * 60 / LENGTH_STEP_S) for minutes, _ in points})
    out = {
        "max_audio_s": max_audio_s,
        "longest_clip_s": max((s["audio_s"] for s in samples), default=None),
        "probe_audio_s": max((p["audio_s"] for p in probes), default=None),
        "clips_peak_rss_mb": max((s["peak_rss_mb"] for s in samples if s.get("peak_rss_mb") is not None), default=None),
        "probe_peak_rss_mb": max((p["peak_rss_mb"] for p in probes if p.get("peak_rss_mb") is not None), default=None),
        "lengths": lengths,
        "mib_per_minute": _slope(points) if lengths >= MIN_LENGTHS else None,
    }
    longest = max_audio_s if max_audio_s is not None else out["longest_clip_s"]
    out["valid_for"] = None if longest is None else f"valid for requests up to {longest:.0f} s"
    out["text"] = _text(out)
    return out


def _text(e: dict[str, Any]) -> str:
    if e["valid_for"] is None:
        return ""
    if e["max_audio_s"] is not None:
        text = f"{e['valid_for']} (max_audio_s: a {e['probe_audio_s']:.0f} s probe per language was measured"
        if e["probe_peak_rss_mb"] is not None and e["clips_peak_rss_mb"] is not None:
            text += (f", {e['probe_peak_rss_mb']:.0f} MiB while transcribing it against {e['clips_peak_rss_mb']:.0f} MiB "
                     "on the clips")
        text += ")"
    else:
        text = f"{e['valid_for']}, the longest clip measured (set max_audio_s to cover longer requests)"
    slope = e["mib_per_minute"]
    if slope is not None and slope >= FLAT_MIB_PER_MINUTE:
        text += (f"; memory grows by about {slope:.0f} MiB per minute of audio ({e['lengths']} lengths measured): "
                 "longer requests need more")
    elif slope is not None:
        text += f"; memory did not grow with the length of the request ({e['lengths']} lengths measured)"
    return text


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y against x."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    return (sum((x - mean_x) * (y - mean_y) for x, y in points)
            / sum((x - mean_x) ** 2 for x, _ in points))
