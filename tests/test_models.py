"""Recommender models (pure torch): shapes, causality, padding, missing features, the sampled softmax."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from captionrec.models import ItemRepresentation, SASRec, TwoTower, build_model, sampled_softmax_loss

N, D, L = 30, 16, 6


def _features(n=N, f=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n + 1, f, generator=g)
    x[0] = 0
    return x


def _repr(mode: str, mask=None):
    feats = _features() if mode != "id" else None
    return ItemRepresentation(N, D, mode, features=feats, feature_mask=mask, hidden=12, dropout=0.0)


@pytest.mark.parametrize("mode", ["id", "feature", "id+feature"])
@pytest.mark.parametrize("model", ["sasrec", "two_tower"])
def test_shapes_and_padding(model, mode):
    torch.manual_seed(0)
    m = build_model(model, _repr(mode), num_users=5, max_seq_len=L, dim=D, layers=1, heads=2, dropout=0.0,
                    user_id_in_tower=True).eval()
    seq = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])  # (B, T), left-padded
    out = m(seq, torch.tensor([1, 2]))
    assert out.shape == (2, L, D)
    assert torch.isfinite(out).all()
    items = m.item_vectors()
    assert items.shape == (N + 1, D)
    assert torch.all(items[0] == 0)  # padding item


@pytest.mark.parametrize("model", ["sasrec", "two_tower"])
def test_states_are_causal(model):
    torch.manual_seed(0)
    m = build_model(model, _repr("id"), num_users=3, max_seq_len=L, dim=D, layers=2, heads=2, dropout=0.0).eval()
    a = torch.tensor([[0, 7, 8, 9, 10, 11]])
    b = torch.tensor([[0, 7, 8, 9, 20, 21]])  # differs only after position 3
    out_a, out_b = m(a), m(b)
    assert torch.allclose(out_a[:, :4], out_b[:, :4], atol=1e-6)
    assert not torch.allclose(out_a[:, 4:], out_b[:, 4:])


def test_sasrec_left_padding_does_not_change_the_last_state():
    torch.manual_seed(0)
    m = SASRec(_repr("id"), max_seq_len=L, dim=D, layers=2, heads=2, dropout=0.0).eval()
    short = m(torch.tensor([[4, 5, 6]]))[:, -1]
    padded = m(torch.tensor([[0, 0, 0, 4, 5, 6]]))[:, -1]
    assert torch.allclose(short, padded, atol=1e-5)
    with pytest.raises(ValueError, match="max_seq_len"):
        m(torch.ones(1, L + 1, dtype=torch.long))


def test_items_without_features_share_the_missing_vector():
    mask = torch.ones(N + 1, dtype=torch.bool)
    mask[[3, 4]] = False  # e.g. their captions failed
    r = _repr("feature", mask).eval()
    v = r(torch.tensor([3, 4, 5]))
    assert torch.allclose(v[0], v[1]) and torch.allclose(v[0], r.missing)
    assert not torch.allclose(v[0], v[2])
    # id+feature: the id part still tells them apart
    r2 = _repr("id+feature", mask).eval()
    v2 = r2(torch.tensor([3, 4]))
    assert not torch.allclose(v2[0], v2[1])


def test_features_are_frozen_and_bad_shapes_are_rejected():
    r = _repr("feature")
    assert "features" in dict(r.named_buffers()) and all(n != "features" for n, _ in r.named_parameters())
    with pytest.raises(ValueError, match="num_items"):
        ItemRepresentation(N, D, "feature", features=torch.zeros(N, 4))
    with pytest.raises(ValueError, match="needs a feature matrix"):
        ItemRepresentation(N, D, "feature")
    with pytest.raises(ValueError, match="mode"):
        ItemRepresentation(N, D, "bogus")
    with pytest.raises(ValueError, match="unknown model"):
        build_model("bert4rec", _repr("id"), num_users=1, max_seq_len=L, dim=D)


def test_two_tower_user_id_embedding_is_used():
    torch.manual_seed(0)
    m = TwoTower(_repr("id"), num_users=4, dim=D, layers=1, dropout=0.0, user_id_in_tower=True).eval()
    seq = torch.tensor([[0, 1, 2, 3, 4, 5]] * 2)
    with torch.no_grad():
        m.user_embedding.weight[1:] = torch.randn(4, D)
    out = m(seq, torch.tensor([1, 2]))
    assert not torch.allclose(out[0], out[1])


@pytest.mark.parametrize("mode", ["in_batch", "uniform", "both"])
def test_sampled_softmax(mode):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(N + 1, D)
    hidden = torch.randn(8, D, requires_grad=True)
    targets = torch.tensor([1, 2, 3, 3, 4, 5, 6, 7])  # a duplicate target is not its own negative
    g = torch.Generator().manual_seed(0)
    loss = sampled_softmax_loss(hidden, targets, emb, N, mode=mode, num_uniform=16, generator=g)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()
    # perfect separation: hidden == target vector scaled up -> loss near 0 for in-batch
    if mode == "in_batch":
        fn = lambda idx: torch.nn.functional.one_hot(idx, N + 1).float()  # noqa: E731
        t = torch.tensor([1, 2, 3])
        assert sampled_softmax_loss(fn(t) * 50, t, fn, N, mode="in_batch").item() < 1e-6
    with pytest.raises(ValueError):
        sampled_softmax_loss(hidden, targets, emb, N, mode="hard")


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    m = SASRec(_repr("id"), max_seq_len=L, dim=D, layers=1, heads=2, dropout=0.0)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    seq = torch.arange(1, 8).repeat(16, 1) % N + 1  # deterministic successor pattern
    losses = []
    for _ in range(30):
        h = m(seq[:, :-1])
        loss = sampled_softmax_loss(h.reshape(-1, D), seq[:, 1:].reshape(-1), m.item_repr, N, mode="uniform", num_uniform=10)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


def test_models_never_import_pyspark():
    code = "import sys, captionrec.models, captionrec.training.loop, captionrec.training.metrics; " \
           "sys.exit(1 if 'pyspark' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
