"""Adversarial attacks and robust evaluation: the attack registry (:mod:`.registry`), specs
(:mod:`.spec`), the attacks (:mod:`.attacks`, built from :mod:`.steps`), the early-exit evaluator
(:mod:`.evaluator`), the protocol (:mod:`.protocol`) and evaluation (:mod:`.evaluation`).
"""
