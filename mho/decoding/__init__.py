"""CTC decoding (greedy and lexicon + LM beam search) and error rates: what turns a model's
log-probs into words and scores them, below training, simulation and the runtimes."""
