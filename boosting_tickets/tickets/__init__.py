"""Boosting tickets: settings (:mod:`.config`), the pruning-criterion registry (:mod:`.criteria`),
pruning (:mod:`.pruning`), finding (:mod:`.finding`), tickets on disk (:mod:`.ticket`), the control
registry (:mod:`.controls`) and retraining (:mod:`.retrain`).
"""
