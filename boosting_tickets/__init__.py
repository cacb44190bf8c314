"""boosting-tickets: sparse subnetworks that make PGD adversarial training converge faster.

Li et al., "Towards Practical Lottery Ticket Hypothesis for Adversarial Training" (arXiv 2003.05733).
"""

__version__ = "0.1.0"
