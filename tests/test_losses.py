import math

import torch
import torch.nn.functional as F

from trainer.losses import (
    Queue,
    alignment_similarities,
    batch_nce,
    gradcam,
    info_nce,
    momentum_update,
    motion_alignment_loss,
    multi_positive_nce,
)


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
    # More keys than room: the queue holds the last three, as if pushed one by one.
    many = torch.arange(10.0).reshape(5, 2)
    queue.push(many)
    assert queue.ptr.item() == 0 and {tuple(k) for k in queue.keys.tolist()} == {(4.0, 5.0), (6.0, 7.0), (8.0, 9.0)}
    assert torch.equal(queue.keys[2], many[-1])


def test_momentum_update_is_the_ema():
    online, target = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    before = target.weight.detach().clone()
    momentum_update(target, online, 0.9)
    assert torch.allclose(target.weight, 0.9 * before + 0.1 * online.weight.detach())


def test_info_nce_with_own_hard_negatives_equals_its_closed_form():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    hard = torch.tensor([[[0.0, 1.0]]])
    queue = torch.tensor([[-1.0, 0.0], [0.8, 0.6]])
    t = 0.5
    terms = [math.exp(0.6 / t), math.exp(0.0 / t), math.exp(-1.0 / t), math.exp(0.8 / t)]
    want = -math.log(terms[0] / sum(terms))
    assert math.isclose(info_nce(q, k, queue, t, own_negatives=hard).item(), want, rel_tol=1e-6)


def test_multi_positive_nce_closed_form_and_rows_without_positives():
    s = torch.tensor([[0.9, 0.5, -0.2], [0.1, 0.2, 0.3]])
    positive = torch.tensor([[True, True, False], [False, False, False]])
    t = 0.5
    e = [math.exp(v / t) for v in (0.9, 0.5, -0.2)]
    want = -math.log((e[0] + e[1]) / sum(e))  # row 2 has no positive: skipped
    assert math.isclose(multi_positive_nce(s, positive, t).item(), want, rel_tol=1e-6)
    assert multi_positive_nce(s, torch.zeros_like(positive), t).item() == 0.0


def test_gradcam_weights_each_channel_by_its_mean_gradient_and_keeps_the_positive_part():
    activation = torch.zeros(1, 2, 1, 2, 2)
    activation[0, 0, 0] = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    activation[0, 1, 0] = torch.tensor([[0.0, 3.0], [0.0, 0.0]])
    gradient = torch.zeros_like(activation)
    gradient[0, 0] = 0.5  # mean 0.5
    gradient[0, 1] = -1.0  # mean -1: channel 1 counts against
    want = torch.tensor([[0.5, 0.0], [0.0, 1.0]])  # relu(0.5 A0 - A1)
    torch.testing.assert_close(gradcam(activation, gradient)[0, 0], want)


def test_motion_alignment_is_zero_for_proportional_maps_and_grows_when_misplaced():
    g = torch.Generator().manual_seed(0)
    motion = torch.rand(2, 4, 5, 5, generator=g) + 0.1
    assert motion_alignment_loss(motion, motion).item() < 1e-6
    assert motion_alignment_loss(3 * motion, motion).item() < 1e-6
    shifted = motion.roll(2, dims=3)
    assert motion_alignment_loss(shifted, motion) > 0.05
    s_st, s_t, s_s = alignment_similarities(shifted, motion)
    assert torch.all(s_s < 1) and torch.all(s_st < 1)
    # A map that moves through time the wrong way loses on the temporal term.
    ramp = torch.arange(1.0, 5.0)[None, :, None, None].expand(1, 4, 3, 3)
    assert alignment_similarities(ramp.flip(1), ramp)[1] < alignment_similarities(ramp, ramp)[1]
