import math

import torch
import torch.nn.functional as F

from farmcli.model.align import InfoNCEAlign, NoAlign, info_nce


def _by_hand(h_live, h_video, user_id, tau, valid):
    """Eq. 14 written out: for each valid anchor, the positive over itself plus other users' valid videos."""
    total, n = 0.0, 0
    for i in range(len(user_id)):
        if not valid[i]:
            continue
        sims = {j: float(h_live[i] @ h_video[j]) / tau for j in range(len(user_id))}
        negatives = [j for j in sims if j != i and valid[j] and user_id[j] != user_id[i]]
        denominator = math.exp(sims[i]) + sum(math.exp(sims[j]) for j in negatives)
        total += -math.log(math.exp(sims[i]) / denominator)
        n += 1
    return total / max(n, 1)


def test_same_user_pairs_are_not_negatives():
    torch.manual_seed(0)
    h_live = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
    h_video = F.normalize(torch.randn(6, 4, dtype=torch.float64), dim=-1)
    user_id = torch.tensor([7, 7, 3, 9, 3, 7])
    valid = torch.ones(6, dtype=torch.bool)
    loss = info_nce(h_live, h_video, user_id, 0.07, valid)
    assert math.isclose(float(loss), _by_hand(h_live, h_video, user_id, 0.07, valid), rel_tol=1e-9)
    # and it differs from the naive loss that treats same-user samples as negatives
    naive = F.cross_entropy(h_live @ h_video.T / 0.07, torch.arange(6))
    assert not math.isclose(float(loss), float(naive), rel_tol=1e-6)


def test_distinct_users_give_the_standard_infonce():
    torch.manual_seed(1)
    h_live, h_video = torch.randn(5, 3), torch.randn(5, 3)
    expected = F.cross_entropy(h_live @ h_video.T / 0.5, torch.arange(5))
    torch.testing.assert_close(info_nce(h_live, h_video, torch.arange(5), 0.5), expected)


def test_invalid_rows_are_neither_anchors_nor_negatives():
    torch.manual_seed(2)
    h_live, h_video = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    user_id, valid = torch.arange(5), torch.tensor([True, False, True, True, False])
    loss = info_nce(h_live, h_video, user_id, 0.3, valid)
    assert math.isclose(float(loss), _by_hand(h_live, h_video, user_id, 0.3, valid), rel_tol=1e-9)
    nothing = info_nce(h_live, h_video, user_id, 0.3, torch.zeros(5, dtype=torch.bool))
    assert float(nothing) == 0.0


def test_all_one_user_leaves_only_positives():
    h = torch.randn(4, 3)
    assert float(info_nce(h, h, torch.zeros(4, dtype=torch.long), 0.07)) == 0.0


def test_module_is_cosine_by_default_and_finite_on_empty_histories():
    torch.manual_seed(0)
    module = InfoNCEAlign(video_dim=6, live_dim=4, dims=[8, 5])
    video, live = torch.randn(4, 7, 6), torch.randn(4, 7, 4)
    video_mask = torch.ones(4, 7, dtype=torch.bool)
    live_mask = video_mask.clone()
    live_mask[1] = False
    loss, aux = module(video, live, video_mask, live_mask, torch.arange(4))
    torch.testing.assert_close(aux["h_live"].norm(dim=-1), torch.ones(4))
    assert aux["h_video"].shape == (4, 5)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_none_has_no_loss_and_no_parameters():
    module = NoAlign(video_dim=6, live_dim=4)
    assert sum(p.numel() for p in module.parameters()) == 0
    loss, aux = module(None, None, None, None, None)
    assert loss is None and aux == {}
