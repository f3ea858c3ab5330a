"""Orchestration above the layers: evaluate recognizers and chips, parity checks across
runtimes, sweeps over chip settings, and the benchmarks."""
