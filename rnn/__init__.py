"""The core: step modules (Elman, GRU, LSTM), data, training, checkpoints, eager loops.

Layers, top to bottom: `toolkit` (the application: CLI, bench, plots, demo) -> `export` ->
`rnn` (this package) -> `runtime`. Each imports only the layers below it (CI checks this with
import-linter). Importing the package imports nothing heavy: `rnn.data` and `rnn.config` need
numpy only; the modules that train or rebuild models import torch.
"""
