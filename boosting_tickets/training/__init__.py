"""Training: settings (:mod:`.hparams`), the objective registry (:mod:`.objectives`, losses in
:mod:`.losses`), schedules, the one loop (:mod:`.loop`) with its standard callbacks
(:mod:`.callbacks`), and runs in hashed directories (:mod:`.run`).
"""
