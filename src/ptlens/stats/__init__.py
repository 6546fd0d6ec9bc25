"""Statistics shared by behaviour, mechanism and the report: numpy only, nothing above the core layer.

- :mod:`.statistic`: metrics as ratios of per-problem sums (:class:`~.statistic.Statistic`,
  :class:`~.statistic.Additive`), which make a bootstrap or a permutation one matrix product.
- :mod:`.estimate`: :class:`~.estimate.Estimate`, a value with its interval (and p), computed here, stored and read
  back by the report (no numpy).
- :mod:`.bootstrap`: problem resamples and percentile intervals (:func:`~.bootstrap.estimate`,
  :func:`~.bootstrap.paired_difference`).
- :mod:`.permutation`: the paired sign-flip test over problems (:func:`~.permutation.paired_test`).
- :mod:`.multiple`: family-wise corrections (Holm, Bonferroni tails) and what the exact test can reject.
- :mod:`.bounds`: the normal cdf and quantile, the Wilson binomial bound.
"""
