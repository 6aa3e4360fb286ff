"""The sections of `speed.py`, one module each: what it measures and the record it returns.

Each module's `section_*` function takes what the run plan in `speed.py` gives it (the data, how
many pairs or rounds) and returns a JSON-ready dict that `speed.py` stores under the section's
key and `speed_report.py` renders. Modules that need a fresh interpreter (time to accuracy, the
child levers) also hold the `child_*` function that `speed.py --child SPEC` runs.
"""
