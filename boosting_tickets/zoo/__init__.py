"""RobustBench models under the boosting-tickets evaluation harness, and ours in RobustBench format:
settings (:mod:`.config`), robustbench's import and registry (:mod:`.robustbench`), checkpoint
checks (:mod:`.checkpoints`), the packaged leaderboard (:mod:`.reference`), measuring zoo models
(:mod:`.compare`) and export (:mod:`.export`).
"""
