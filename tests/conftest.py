"""Test-wide settings."""

import torch

# One intra-op thread: the suite runs on 2 cores next to data-loader workers and server
# subprocesses, and OpenMP threads competing for busy cores are an order of magnitude slower.
torch.set_num_threads(1)
