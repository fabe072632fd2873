"""Whisper deployment benchmark harness: scenario -> isolated measured runs -> results -> reports.

Kept free of imports: the worker child imports this package before applying CPU affinity and
thread settings, which must happen before any numeric library loads.
"""

__version__ = "0.1.0"
SCHEMA_VERSION = 1
