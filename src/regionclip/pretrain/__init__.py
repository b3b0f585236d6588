"""RegionCLIP pretraining (paper §3.2; method reference §4-5): teacher pseudo-labels, the three losses and
the task module that owns student, teacher and losses."""
