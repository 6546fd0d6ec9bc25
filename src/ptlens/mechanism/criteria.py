"""The mechanism step's decision thresholds, apart from torch so the report and the figures read them cheaply."""

CARRY_SHARE = 0.5
"""A part *carries* the change when the family-wise lower bound (one-sided, level 1 − 0.05/parts: Bonferroni over
every part of the transition) of the share of KL(B ‖ A) its transplant removes is at least this; it carries
*part* of it when the point estimate is at least half of this."""
