"""Model, data, training and plots for recurrent step models.

Importing the package imports nothing heavy: `rnn.data` needs numpy only, and the CLI
(`rnn.cli`) imports torch only for the commands that need it.
"""
