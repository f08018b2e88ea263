"""Recommender models (pure torch): shapes, causality, padding, missing features, the declared interface
(calculate_loss / score_all), the next-item objective (full and sampled softmax, logQ, masks)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from captionrec.models import (
    HistoryScorer, ItemRepresentation, NextItemObjective, Recommender, SASRec, TwoTower, build_model,
    user_item_members,
)

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


@pytest.mark.parametrize("model,norm", [("sasrec", "pre"), ("sasrec", "post"), ("two_tower", "pre")])
def test_states_are_causal(model, norm):
    torch.manual_seed(0)
    m = build_model(model, _repr("id"), num_users=3, max_seq_len=L, dim=D, layers=2, heads=2, dropout=0.0,
                    sasrec_norm=norm).eval()
    a = torch.tensor([[0, 7, 8, 9, 10, 11]])
    b = torch.tensor([[0, 7, 8, 9, 20, 21]])  # differs only after position 3
    out_a, out_b = m(a), m(b)
    assert torch.allclose(out_a[:, :4], out_b[:, :4], atol=1e-6)
    assert not torch.allclose(out_a[:, 4:], out_b[:, 4:])


@pytest.mark.parametrize("norm", ["pre", "post"])
def test_sasrec_left_padding_does_not_change_the_last_state(norm):
    torch.manual_seed(0)
    m = SASRec(_repr("id"), max_seq_len=L, dim=D, layers=2, heads=2, dropout=0.0, norm=norm).eval()
    short = m(torch.tensor([[4, 5, 6]]))[:, -1]
    padded = m(torch.tensor([[0, 0, 0, 4, 5, 6]]))[:, -1]
    assert torch.allclose(short, padded, atol=1e-5)
    with pytest.raises(ValueError, match="max_seq_len"):
        m(torch.ones(1, L + 1, dtype=torch.long))


def test_sasrec_input_is_led_by_the_items_not_the_positions_at_init():
    """At initialisation the item part of the input (id vector * sqrt(dim)) must not be drowned by the position
    embedding (nn.Embedding's default N(0, 1) is ~6x larger at dim 64 and slowed learning on MovieLens-100K)."""
    torch.manual_seed(0)
    m = SASRec(ItemRepresentation(N, 64, "id"), max_seq_len=L, dim=64, layers=1, heads=2, dropout=0.0)
    item_part = m.item_repr(torch.arange(1, N + 1)).norm(dim=-1).mean() * 64 ** 0.5
    position_part = m.position.weight.norm(dim=-1).mean()
    assert position_part < item_part, (float(position_part), float(item_part))


def test_sasrec_post_norm_is_recboles_layout():
    """norm="post": the summed item and position vectors go through a LayerNorm (so scaling both changes
    nothing; the pre layout's states change), blocks are post-LN, linear layers start from N(0, 0.02)."""
    seq = torch.tensor([[0, 0, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6]])
    states = {}
    for norm in ("pre", "post"):
        torch.manual_seed(0)
        m = SASRec(_repr("id"), max_seq_len=L, dim=D, layers=2, heads=2, dropout=0.0, norm=norm).eval()
        with torch.no_grad():
            before = m(seq)
            m.item_repr.id_embedding.weight.mul_(10.0)
            m.position.weight.mul_(10.0)
            states[norm] = (before, m(seq))
        if norm == "post":
            qkv = m.blocks[0].qkv.weight.detach()
            assert abs(float(qkv.std()) - 0.02) < 0.004 and float(m.blocks[1].ff[0].bias.detach().abs().max()) == 0.0
            assert not any(isinstance(x, torch.nn.Dropout) for x in m.blocks[0].ff)  # RecBole drops after the FFN only
            # post-LN: every real position's state is a LayerNorm output (mean 0, std 1 before its affine part)
            assert torch.allclose(states[norm][0][1].mean(-1), torch.zeros(L), atol=1e-5)
    torch.testing.assert_close(states["post"][0], states["post"][1], atol=1e-4, rtol=1e-3)  # up to the LN epsilon
    assert not torch.allclose(states["pre"][0], states["pre"][1], atol=1e-3)
    with pytest.raises(ValueError, match="norm"):
        SASRec(_repr("id"), max_seq_len=L, dim=D, norm="sandwich")


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


def _objective(mode="both", n=N, known=None, counts=None, **kw):
    known = torch.ones(n + 1, dtype=torch.bool) if known is None else known
    return NextItemObjective(known, counts, mode=mode, **kw)


@pytest.mark.parametrize("mode", ["in_batch", "uniform", "both", "full"])
def test_sampled_softmax(mode):
    torch.manual_seed(0)
    emb = ItemRepresentation(N, D, "id")
    hidden = torch.randn(8, D, requires_grad=True)
    targets = torch.tensor([1, 2, 3, 3, 4, 5, 6, 7])  # a duplicate target is not its own negative
    rows = torch.arange(8)
    g = torch.Generator().manual_seed(0)
    loss = _objective(mode, num_uniform=16)(hidden, targets, rows, None, emb, generator=g)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()
    # perfect separation: hidden == target vector scaled up -> loss near 0 for in-batch
    if mode == "in_batch":
        class OneHot(torch.nn.Module):
            def forward(self, idx):
                return torch.nn.functional.one_hot(idx, N + 1).float()

        t = torch.tensor([1, 2, 3])
        fn = OneHot()
        obj = _objective("in_batch", logq=False)
        assert obj(fn(t) * 50, t, torch.arange(3), None, fn).item() < 1e-6
    with pytest.raises(ValueError):
        _objective("hard")


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    m = SASRec(_repr("id"), max_seq_len=L, dim=D, layers=1, heads=2, dropout=0.0)
    m.set_objective(_objective("uniform", num_uniform=10))
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    seq = torch.arange(1, 8).repeat(16, 1) % N + 1  # deterministic successor pattern
    losses = []
    for _ in range(30):
        loss, n = m.calculate_loss({"seq": seq})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert n == 16 * 6
    assert losses[-1] < 0.3 * losses[0]


@pytest.mark.parametrize("model", ["sasrec", "two_tower"])
def test_both_models_implement_the_declared_interface(model):
    """calculate_loss(batch) and score_all(histories) come from the one Recommender base, for both models."""
    torch.manual_seed(0)
    m = build_model(model, _repr("id"), num_users=3, max_seq_len=L, dim=D, layers=1, heads=2, dropout=0.0)
    assert isinstance(m, Recommender)
    assert type(m).calculate_loss is Recommender.calculate_loss and type(m).score_all is Recommender.score_all
    with pytest.raises(RuntimeError, match="objective"):
        m.calculate_loss({"seq": torch.tensor([[0, 1, 2, 3, 4, 5, 6]])})
    m.set_objective(_objective("full"))
    loss, n = m.calculate_loss({"seq": torch.tensor([[0, 1, 2, 3, 4, 5, 6]]), "user_idx": torch.tensor([1])})
    assert n == 5 and torch.isfinite(loss)
    m.eval()
    hist = torch.tensor([[0, 0, 0, 1, 2, 3], [4, 5, 6, 7, 8, 9]])
    scores = m.score_all(hist)
    assert scores.shape == (2, N + 1) and torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    expected = m(hist)[:, -1] @ m.item_vectors()[1:].T
    assert torch.allclose(scores[:, 1:], expected, atol=1e-5)
    assert torch.equal(HistoryScorer(m).eval()(hist), scores)


def test_items_without_a_training_interaction_share_the_unknown_vector():
    """Issue 10.1: only training items get their own id row; the rest share one vector (zero until id dropout)."""
    known = torch.zeros(N + 1, dtype=torch.bool)
    known[1:21] = True  # items 21..30 first appear after the training data
    r = ItemRepresentation(N, D, "id", known=known).eval()
    v = r(torch.tensor([21, 25, 30, 3]))
    assert torch.equal(v[0], v[1]) and torch.equal(v[0], v[2]) and torch.equal(v[0], r.unknown.detach())
    assert not torch.equal(v[0], v[3])
    # id+feature: an unknown item is scored from its features (+ the shared unknown vector)
    rf = ItemRepresentation(N, D, "id+feature", features=_features(), known=known, hidden=12, dropout=0.0).eval()
    with torch.no_grad():
        proj = rf.projection(rf.features[torch.tensor([21, 25])])
    assert torch.allclose(rf(torch.tensor([21, 25])), proj + rf.unknown, atol=1e-6)
    # id dropout trains the unknown vector: in training mode some known items use it
    rd = ItemRepresentation(N, D, "id", known=known, id_dropout=0.5).train()
    with torch.no_grad():
        rd.unknown.fill_(7.0)
    out = rd(torch.arange(1, 21).repeat(20))
    assert 0.3 < float((out == 7.0).all(dim=1).float().mean()) < 0.7


@pytest.mark.parametrize("mode", ["full", "in_batch", "uniform", "both"])
def test_future_items_are_never_negatives_nor_trained(mode):
    """Issue 10.1: an item with no training interaction is never a negative, so no gradient reaches it."""
    torch.manual_seed(0)
    known = torch.zeros(N + 1, dtype=torch.bool)
    known[1:16] = True
    m = SASRec(ItemRepresentation(N, D, "id", known=known), max_seq_len=L, dim=D, layers=1, heads=2, dropout=0.0)
    m.set_objective(NextItemObjective(known, mode=mode, num_uniform=64))
    seq = torch.randint(1, 16, (8, L + 1))
    before = m.item_repr.id_embedding.weight.detach().clone()
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    for _ in range(3):
        loss, _ = m.calculate_loss({"seq": seq}, torch.Generator().manual_seed(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = m.item_repr.id_embedding.weight.detach()
    assert not torch.equal(before[1:16], after[1:16])  # training items learn
    assert torch.equal(before[16:], after[16:])  # the future's rows are untouched
    assert float(m.item_repr.unknown.detach().abs().sum()) == 0.0  # no id dropout: the unknown vector stays zero
    with pytest.raises(ValueError, match="not among the phase's training items"):
        m.calculate_loss({"seq": torch.tensor([[0, 0, 0, 1, 2, 20, 3]])})


def test_logq_correction_is_the_expected_copies_of_each_item():
    """Issue 10.3: sampled logits are corrected by -log(expected copies among the negatives), hand-computed."""
    known = torch.ones(4, dtype=torch.bool)  # items 1..3
    counts = torch.tensor([0.0, 6.0, 3.0, 1.0])  # target frequencies: p = 0.6, 0.3, 0.1

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.v = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

        def forward(self, idx):
            return self.v[idx]

    items = Fixed()
    hidden = torch.tensor([[2.0, 0.5], [0.3, 1.0]])
    targets = torch.tensor([1, 2])
    rows = torch.tensor([0, 1])
    obj = NextItemObjective(known, counts, mode="in_batch", logq=True, mask_user_items=False)
    got = obj(hidden, targets, rows, None, items)
    p = counts / counts.sum()
    c = 2 * p  # M = 2 targets -> expected copies of item j among the in-batch negatives
    s = hidden @ items.v[targets].T  # (2, 2): row i against the batch's targets
    logits = torch.stack([
        torch.stack([s[0, 0] - torch.log(c[1]), s[0, 1] - torch.log(c[2])]),
        torch.stack([s[1, 1] - torch.log(c[2]), s[1, 0] - torch.log(c[1])]),
    ])
    expected = torch.nn.functional.cross_entropy(logits, torch.zeros(2, dtype=torch.long))
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    plain = NextItemObjective(known, counts, mode="in_batch", logq=False, mask_user_items=False)(hidden, targets, rows, None, items)
    assert plain.item() != pytest.approx(got.item())


def test_a_users_own_items_are_not_its_negatives():
    """Issue 10.3: in-batch, uniform and full softmax never use the row's user's other items as negatives."""
    torch.manual_seed(0)
    seq = torch.tensor([[1, 2, 3], [4, 5, 6]])  # row 0: user 1 had 1, 2, 3; row 1: user 1 again
    users = torch.tensor([1, 1])
    members = user_item_members(seq, users, N)
    assert members[0, [1, 2, 3, 4, 5, 6]].all() and not members[0, 7] and not members[0, 0]
    assert torch.equal(members[0], members[1])  # same user: merged
    assert not user_item_members(seq, torch.tensor([1, 2]), N)[0, 4]
    emb = ItemRepresentation(N, D, "id")
    hidden = torch.randn(2, D)
    targets = torch.tensor([3, 6])
    rows = torch.tensor([0, 1])
    for mode in ("full", "in_batch", "both"):
        obj = _objective(mode, num_uniform=64)
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        masked = obj(hidden, targets, rows, members, emb, generator=g())
        # the user's items (1..6) make no difference: moving their vectors does not change the loss
        moved = ItemRepresentation(N, D, "id")
        with torch.no_grad():
            moved.id_embedding.weight.copy_(emb.id_embedding.weight)
            moved.id_embedding.weight[[1, 2, 4, 5]] += 10.0
        assert obj(hidden, targets, rows, members, moved, generator=g()).item() == pytest.approx(masked.item(), rel=1e-5)
        unmasked = obj(hidden, targets, rows, None, moved, generator=g())
        assert unmasked.item() != pytest.approx(masked.item(), rel=1e-3)


def test_models_never_import_pyspark():
    code = "import sys, captionrec.models, captionrec.training.loop, captionrec.evaluation.ranking, " \
           "captionrec.training.loaders, captionrec.training.evaluate, captionrec.training.distributed; " \
           "sys.exit(1 if 'pyspark' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("model", ["sasrec", "two_tower"])
def test_a_row_trains_only_its_new_targets(model):
    """'new_targets' k (overlapping training rows): the loss is the full-softmax cross-entropy of the row's
    newest k targets only, each with the whole row before it as history; without it, every target counts."""
    torch.manual_seed(0)
    m = build_model(model, _repr("id"), num_users=3, max_seq_len=L, dim=D, layers=1, heads=2, dropout=0.0).eval()
    known = torch.ones(N + 1, dtype=torch.bool)
    known[0] = False
    m.set_objective(_objective("full", known=known, mask_user_items=False))
    seq = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12, 13]])  # (2, L + 1): 5 and 6 targets
    inp, tgt = seq[:, :-1], seq[:, 1:]
    with torch.no_grad():
        logits = m(inp) @ m.item_vectors().T  # (2, L, N + 1)
        logits[..., 0] = float("-inf")
        per_target = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt, reduction="none")  # (2, L)
        loss, n = m.calculate_loss({"seq": seq, "new_targets": torch.tensor([2, 3])})
        assert n == 5
        torch.testing.assert_close(loss, torch.cat([per_target[0, -2:], per_target[1, -3:]]).mean())
        everything, n_all = m.calculate_loss({"seq": seq})
        assert n_all == 11
        torch.testing.assert_close(everything, torch.cat([per_target[0, 1:], per_target[1]]).mean())
        # a row that claims more targets than it has real ones trains only the real ones
        _, n_pad = m.calculate_loss({"seq": seq[:1], "new_targets": torch.tensor([L])})
        assert n_pad == 5
