"""The measured child process: `python -m harness.child.worker JOB.json RESULT.json`.

Kept free of imports: the child applies CPU affinity before any numeric library loads, and imports
nothing but the standard library, PyAV, numpy and the one backend it measures.
"""
