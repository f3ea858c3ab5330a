"""Learnable Pulse Accumulator studies: the MSE diagnostic and progressive conversion."""
