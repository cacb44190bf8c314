"""Instability analysis (Frankle, Dziugaite, Roy & Carbin 2020, "Linear Mode Connectivity and the
Lottery Ticket Hypothesis"), measured under attack as well as on clean data.

From the state of a run at optimizer step K, two copies train to the end with different SGD noise;
the error along the straight line between their final weights, minus the mean of the two
endpoints' errors, is the instability. Stable (below 2 pp) means the copies land in one linearly
connected basin. :mod:`.path` interpolates and measures, :mod:`.analysis` trains the copies and
writes ``instability.json``; ``boosting-tickets instability`` is the command and
``boosting-tickets tables`` draws the figures.
"""
