"""Reporting: the raw-results format (:mod:`.results`), statistics (:mod:`.stats`), grouping and
comparisons (:mod:`.collect`, :mod:`.compare`), the table registry (:mod:`.tables`, rendered by
:mod:`.formats`), figures, the README and :func:`build.regenerate`, plus the published reference
numbers (:mod:`.published`).
"""
