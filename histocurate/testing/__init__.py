"""Test oracles and data generators (for the test suite and the benchmarks; never used by
a stage): synthetic metric tables (`metrics_data`), synthetic selection cohorts
(`selection_data`) and inference oracles (`predict_data`)."""
