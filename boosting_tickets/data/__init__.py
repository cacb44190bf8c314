"""Datasets: the registry (:mod:`.registry`), file loaders (:mod:`.files`, :mod:`.synthetic`),
deterministic splits (:mod:`.splits`) and batching (:mod:`.batching`).
"""
