"""Models: the family registry (:mod:`.registry`), the architectures, checkpoints that know their
architecture (:mod:`.checkpoints`) and pruning masks (:mod:`.masks`).
"""
