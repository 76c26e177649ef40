import math

import torch
import torch.nn.functional as F

from trainer.losses import Queue, batch_nce, info_nce, momentum_update


def test_info_nce_equals_its_closed_form_on_a_2x2_case():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    n = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    t = 0.5
    want = [
        -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0 / t) + math.exp(-1 / t))),
        -math.log(math.exp(0.8 / t) / (math.exp(0.8 / t) + math.exp(1 / t) + math.exp(0 / t))),
    ]
    assert math.isclose(info_nce(q, k, n, t).item(), sum(want) / 2, rel_tol=1e-6)


def test_batch_nce_uses_the_other_keys_as_negatives():
    q = F.normalize(torch.randn(4, 8), dim=1)
    k = F.normalize(torch.randn(4, 8), dim=1)
    want = sum(info_nce(q[i:i + 1], k[i:i + 1], torch.cat([k[:i], k[i + 1:]]), 0.1) for i in range(4)) / 4
    assert torch.allclose(batch_nce(q, k, 0.1), want, atol=1e-6)
    # A perfect match scores lower than a shuffled one.
    assert batch_nce(k, k, 0.1) < batch_nce(k, k.roll(1, 0), 0.1)


def test_queue_is_a_fifo_that_wraps():
    queue = Queue(dim=2, size=3)
    keys = torch.eye(2)
    queue.push(keys)
    queue.push(torch.tensor([[0.6, 0.8]]))
    assert queue.ptr.item() == 0 and torch.equal(queue.keys[2], torch.tensor([0.6, 0.8]))
    queue.push(torch.tensor([[-1.0, 0.0]]))
    assert torch.equal(queue.keys[0], torch.tensor([-1.0, 0.0])) and queue.ptr.item() == 1


def test_momentum_update_is_the_ema():
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = target.weight.detach().clone()
    momentum_update(target, online, 0.9)
    assert torch.allclose(target.weight, 0.9 * before + 0.1 * online.weight.detach())
