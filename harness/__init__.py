"""Whisper deployment benchmark harness: scenario -> isolated measured runs -> results -> reports.

Kept free of imports: the worker child imports this package before applying CPU affinity and
thread settings, which must happen before any numeric library loads.
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 1


def load(*paths, include_profiles=False):  # type: ignore[no-untyped-def]
    """Run directories, results.jsonl files or glob patterns ("reports/*/") -> a pandas DataFrame,
    one line per configuration x language (harness.analyze.frame.load, imported only when called)."""
    from harness.analyze.frame import load as _load

    return _load(*paths, include_profiles=include_profiles)
