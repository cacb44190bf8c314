"""Benchmark suites: suite files (:mod:`.suite_files`, :mod:`.suites`, :mod:`.sweep`), the arm-kind
registry (:mod:`.arms`), the cost model (:mod:`.cost`) and plan (:mod:`.plan`), the runner
(:mod:`.runner`), results rows (:mod:`.rows`) and convergence metrics (:mod:`.convergence`).
"""
