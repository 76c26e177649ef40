import torch

from trainer.methods.rgb import RGB


def nce_by_hand(q, k, negatives, t):
    """-log e^{q.k/t} / (e^{q.k/t} + sum_n e^{q.n/t}), averaged over rows."""
    pos = torch.exp((q * k).sum(1) / t)
    neg = torch.exp(q @ negatives.T / t).sum(1)
    return (-torch.log(pos / (pos + neg))).mean()


def test_both_terms_see_one_queue_snapshot_then_both_key_sets_are_enqueued():
    torch.manual_seed(0)
    method = RGB(backbone="tiny", dim=16, queue=64, temperature=0.2)
    a, b = torch.randn(4, 3, 4, 32, 32), torch.randn(4, 3, 4, 32, 32)
    snapshot = method.queue.keys.clone()
    loss = method({"views": [{"rgb": a}, {"rgb": b}]})["inst"]
    with torch.no_grad():
        qa, qb = method.visual.query(a), method.visual.query(b)
        ka, kb = method.visual.key(a), method.visual.key(b)
    want = 0.5 * (nce_by_hand(qa, kb, snapshot, 0.2) + nce_by_hand(qb, ka, snapshot, 0.2))
    torch.testing.assert_close(loss.detach(), want)
    # Pushing k_b before the second term put q_b's own positive among its negatives (loss 1.08 vs 0.44 in the issue).
    torch.testing.assert_close(method.queue.keys[:8], torch.cat([ka, kb]))
    torch.testing.assert_close(method.queue.keys[8:], snapshot[8:])
    assert method.queue.ptr.item() == 8


def test_in_batch_negatives_without_a_queue():
    torch.manual_seed(0)
    method = RGB(backbone="tiny", dim=16, queue=0)
    a, b = torch.randn(3, 3, 4, 32, 32), torch.randn(3, 3, 4, 32, 32)
    loss = method({"views": [{"rgb": a}, {"rgb": b}]})["inst"]
    with torch.no_grad():
        qa, qb = method.visual.query(a), method.visual.query(b)
        ka, kb = method.visual.key(a), method.visual.key(b)

    def batch(q, k):
        return sum(nce_by_hand(q[i:i + 1], k[i:i + 1], torch.cat([k[:i], k[i + 1:]]), 0.2) for i in range(3)) / 3

    torch.testing.assert_close(loss.detach(), 0.5 * (batch(qa, kb) + batch(qb, ka)))
