"""Test oracles and toy data for NuClick (tests and benchmarks only): the plain per-click
reference post-processing (`reference`) and toy samples with oracle probabilities
(`synthetic`)."""
