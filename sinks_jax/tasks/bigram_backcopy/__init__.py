"""Bigram-Backcopy (Guo et al. 2024, arXiv 2410.13835, §3): config, data, analysis and runs."""
