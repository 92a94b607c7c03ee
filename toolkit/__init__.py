"""The application layer: the `rnn` command (toolkit.cli), the demo, benchmarks and plots.

Top of the layers (toolkit -> export -> rnn -> runtime): it may import any of them, and none of
them imports it. Importing the package imports nothing heavy.
"""
