"""Test oracles and data generators (for the test suite and the benchmarks; never used by
a stage): synthetic metric tables (`metrics_data`) and synthetic selection cohorts
(`selection_data`)."""
