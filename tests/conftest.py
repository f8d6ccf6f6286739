"""Shared test configuration: small thread counts so that tests behave on 2-core CI machines."""

import sys
from pathlib import Path

import torch

torch.set_num_threads(2)
# Test helper modules (the reference harness) live next to the tests.
sys.path.insert(0, str(Path(__file__).parent))
