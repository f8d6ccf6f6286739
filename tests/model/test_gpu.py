"""GPU checks (marker `gpu`; deselected by default, skipped where no CUDA device exists)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from maskvos.model.config import get_config
from maskvos.model.sam2 import SAM2Model

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    torch.manual_seed(0)
    cpu = SAM2Model(dataclasses.replace(get_config("sam2.1-tiny"), image_size=512)).eval()
    gpu = SAM2Model(cpu.config).eval()
    gpu.load_state_dict(cpu.state_dict())
    gpu = gpu.cuda()
    image = torch.randn(1, 3, 512, 512)
    mask = torch.zeros(1, 1, 512, 512)
    mask[..., 100:300, 150:350] = 1
    with torch.inference_mode():
        a = cpu.track_frame(cpu.encode_image(image), mask_input=mask)
        b = gpu.track_frame(gpu.encode_image(image.cuda()), mask_input=mask.cuda())
    assert (a.obj_ptr - b.obj_ptr.cpu()).abs().max() < 1e-3
