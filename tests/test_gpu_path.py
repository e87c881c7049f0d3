"""The GPU path, tested on the CPU where it can be: memory-sized batches, bfloat16 autocast within a
stated tolerance, channels-last giving the same logits."""
import math

import pytest
import torch

from explainers import batching
from explainers.classifiers.torchvision_zoo import random_init

# Stated tolerance for bfloat16 autocast of classifier forwards: log-probabilities within 0.05 nats
# (≈ 0.07 bits, against PMI values of a few bits) of float32 on a random-weight ResNet-18 at 224.
BF16_LOGP_TOL_NATS = 0.05


@pytest.fixture(scope="module")
def r18():
    torch.set_num_threads(1)
    return random_init("resnet18", seed=0)


def test_batch_for_memory_on_cpu_is_the_requested_size():
    assert batching.batch_for_memory("cpu", 10**6, 37) == 37


def test_batch_for_memory_uses_free_cuda_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda dev=None: (8 * 2**30, 16 * 2**30))
    assert batching.batch_for_memory("cuda:0", 2**20, 16) == 4096  # 4 GiB / 1 MiB, capped
    assert batching.batch_for_memory("cuda:0", 2**24, 16) == 256  # 4 GiB / 16 MiB
    assert batching.batch_for_memory("cuda:0", 2**33, 16) == 16  # never below the request


def test_forward_bytes_counts_the_largest_layer_and_leaves_no_hook(r18):
    x = torch.rand(1, 3, 224, 224)
    b = batching.forward_bytes(r18.net, x)
    # conv1's output alone: 64 channels at 112×112 in float32
    assert b >= 64 * 112 * 112 * 4 and b < 10 * 64 * 112 * 112 * 4
    assert all(not m._forward_hooks for m in r18.net.modules())


def test_bf16_autocast_logprobs_within_tolerance(r18):
    x = torch.rand(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = torch.log_softmax(r18.logits01(x).double(), 1)
        with batching.classifier_autocast("cpu", True):
            low = r18.logits01(x)
        assert low.dtype == torch.bfloat16  # autocast really ran in bfloat16
        got = torch.log_softmax(low.double(), 1)
    err = float((got - ref).abs().max())
    assert 0 < err < BF16_LOGP_TOL_NATS
    with batching.classifier_autocast("cpu", False), torch.no_grad():
        assert torch.equal(torch.log_softmax(r18.logits01(x).double(), 1), ref)


def test_channels_last_gives_the_same_logits(r18):
    x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = r18.logits01(x)
        net = random_init("resnet18", seed=0).net.to(memory_format=torch.channels_last)
        got = net(r18.normalize(x).contiguous(memory_format=torch.channels_last))
    assert math.isclose(float((got - ref).abs().max()), 0.0, abs_tol=1e-3)
