"""MixMask core: mask generators, mixing, and the exact value of the two-term objective."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from solo_mixmask.errors import ConfigError
from solo_mixmask.losses import mocov2plus_loss_func
from solo_mixmask.mixmask import (
    Branches,
    blocked_grid,
    discrete_grid,
    erase,
    erase_fill,
    erase_loss,
    inverse,
    mix,
    parse_branch_cfg,
    permutation,
    sample_masks,
    two_term_loss,
    unmix,
)


def components(mask: np.ndarray) -> list[int]:
    """Sizes of the 4-connected components of True cells."""
    seen = np.zeros_like(mask, dtype=bool)
    sizes = []
    for start in zip(*np.nonzero(mask)):
        if seen[start]:
            continue
        stack, size = [start], 0
        seen[start] = True
        while stack:
            i, j = stack.pop()
            size += 1
            for a, b in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= a < mask.shape[0] and 0 <= b < mask.shape[1] and mask[a, b] \
                        and not seen[a, b]:
                    seen[a, b] = True
                    stack.append((a, b))
        sizes.append(size)
    return sizes


# ------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("grid", [2, 4, 8, 14])
@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.7])
def test_discrete_reaches_ratio_and_is_never_empty_or_full(grid, ratio):
    rng = np.random.default_rng(1)
    want = min(max(round(ratio * grid * grid), 1), grid * grid - 1)
    counts = {int(discrete_grid(grid, ratio, rng).sum()) for _ in range(200)}
    assert counts == {want}


def test_discrete_extreme_ratio_is_clamped():
    rng = np.random.default_rng(0)
    assert discrete_grid(2, 0.05, rng).sum() == 1
    assert discrete_grid(2, 0.95, rng).sum() == 3


@pytest.mark.parametrize("grid", [2, 4, 8, 16])
def test_blocked_reaches_the_ratio_exactly(grid):
    rng = np.random.default_rng(2)
    want = round(0.5 * grid * grid)
    counts = np.array([blocked_grid(grid, 0.5, rng).sum() for _ in range(300)])
    assert (counts == want).all()


def test_blocked_masks_are_contiguous_blocks_unlike_discrete():
    rng = np.random.default_rng(3)
    blocked = [blocked_grid(8, 0.5, rng) for _ in range(200)]
    discrete = [discrete_grid(8, 0.5, rng) for _ in range(200)]
    n_blocked = np.mean([len(components(m)) for m in blocked])
    n_discrete = np.mean([len(components(m)) for m in discrete])
    largest_share = np.mean([max(components(m)) / m.sum() for m in blocked])
    assert n_blocked < n_discrete / 2
    assert largest_share > 0.6


def test_blocked_rectangles_fill_a_two_by_two_grid_by_halves():
    rng = np.random.default_rng(4)
    for _ in range(50):
        m = blocked_grid(2, 0.5, rng)
        assert m.sum() == 2
        assert m.all(axis=0).any() or m.all(axis=1).any()  # a full row or a full column


@pytest.mark.parametrize("ratio,cells", [(0.25, 1), (0.5, 2), (0.75, 3)])
def test_blocked_two_by_two_keeps_every_reachable_number_of_cells(ratio, cells):
    # 3 of 4 cells admit no single rectangle: the mask must still reach them, not come out empty
    rng = np.random.default_rng(6)
    counts = np.array([blocked_grid(2, ratio, rng).sum() for _ in range(300)])
    assert (counts == cells).all()


@pytest.mark.parametrize("grid", [2, 3, 4, 8])
def test_blocked_keeps_exactly_the_target_at_any_ratio(grid):
    rng = np.random.default_rng(7)
    for ratio in np.linspace(0.02, 0.98, 25):
        want = min(max(round(ratio * grid * grid), 1), grid * grid - 1)
        counts = np.array([blocked_grid(grid, float(ratio), rng).sum() for _ in range(40)])
        assert (counts == want).all(), (grid, ratio)


def test_uniform_ratio_on_a_two_by_two_grid_spreads_lambda_around_a_half():
    rng = np.random.default_rng(8)
    lams = [float(sample_masks("blocked", 2, (0.3, 0.7), (32, 32), 1, False, rng)[1])
            for _ in range(400)]
    values = np.unique(np.round(lams, 2))
    assert set(values) == {0.25, 0.5, 0.75}
    assert abs(np.mean(lams) - 0.5) < 0.03


@pytest.mark.parametrize("size", [32, 30, 224])
def test_lambda_is_the_kept_fraction_of_the_actual_pixel_mask(size):
    rng = np.random.default_rng(5)
    mask, lam = sample_masks("blocked", 7, 0.5, (size, size), 4, False, rng)
    assert mask.shape == (1, 1, size, size) and mask.dtype == torch.bool
    assert lam.item() == pytest.approx(mask.float().mean().item())
    masks, lams = sample_masks("discrete", 4, (0.2, 0.8), (size, size), 6, True, rng)
    assert masks.shape == (6, 1, size, size)
    assert torch.allclose(lams, masks.float().mean(dim=(1, 2, 3)))


def test_ratio_range_is_drawn_per_batch_within_bounds():
    rng = np.random.default_rng(6)
    fractions = [sample_masks("discrete", 10, (0.3, 0.7), (10, 10), 1, False, rng)[1].item()
                 for _ in range(200)]
    assert min(fractions) >= 0.3 - 1e-6 and max(fractions) <= 0.7 + 1e-6
    assert np.std(fractions) > 0.05


# ------------------------------------------------------------------------------------ mixing
def labelled_images(n: int, size: int = 4) -> torch.Tensor:
    """Image i is filled with the value i (so a pixel tells its source)."""
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, size, size).clone()


@pytest.mark.parametrize("kind", ["reverse", "random"])
def test_mixture_and_inverse_permutation_map_each_mixture_to_its_filler(kind):
    rng = np.random.default_rng(7)
    n = 6
    x = labelled_images(n)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :2, :] = True
    perm = permutation(n, kind, rng)
    mixed = mix(x, mask, perm)
    for i in range(n):
        assert torch.all(mixed[i, :, :2] == i)  # kept part: the main image
        assert torch.all(mixed[i, :, 2:] == perm[i])  # filled part: x_perm(i)
    inv = inverse(perm)
    for j in range(n):
        assert torch.all(mixed[inv][j, :, 2:] == j)  # row j of mix[perm^-1] was filled by x_j
    if kind == "reverse":
        assert torch.equal(perm, torch.arange(n - 1, -1, -1))


def sq_dist_loss(targets: torch.Tensor):
    return lambda e: ((e - targets) ** 2).sum(dim=1)


@pytest.mark.parametrize("perm_list", [[3, 2, 1, 0], [2, 0, 3, 1]])
def test_two_term_objective_matches_a_hand_computation(perm_list):
    emb = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 0.5]])
    t = torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, -1.0]])
    perm = torch.tensor(perm_list)
    lam = 0.3
    loss, _ = two_term_loss(sq_dist_loss(t), emb, torch.tensor(lam), perm)
    # by hand: mixture i has main x_i (weight lam) and filler x_perm(i) (weight 1 - lam)
    n = len(emb)
    expected = 0.0
    for i in range(n):
        expected += lam * float(((emb[i] - t[i]) ** 2).sum()) / n
        expected += (1 - lam) * float(((emb[i] - t[perm_list[i]]) ** 2).sum()) / n
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_two_term_objective_with_moco_infonce_by_hand():
    q = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2], [0.1, 1.0], [-1.0, 0.3]]), dim=1)
    k = torch.nn.functional.normalize(torch.tensor([[0.9, 0.1], [0.0, 1.0], [-0.8, -0.2]]), dim=1)
    queue = torch.nn.functional.normalize(torch.tensor([[1.0, -1.0], [0.5, 0.5]]), dim=0)
    T, lam = 0.2, 0.6
    perm = torch.tensor([2, 1, 0])
    loss, _ = two_term_loss(lambda e: mocov2plus_loss_func(e, k, queue, T, "none"), q,
                            torch.tensor(lam), perm)

    def nce(qv, kv):
        pos = math.exp(float(qv @ kv) / T)
        neg = sum(math.exp(float(qv @ queue[:, j]) / T) for j in range(queue.shape[1]))
        return -math.log(pos / (pos + neg))

    expected = sum(lam * nce(q[i], k[i]) + (1 - lam) * nce(q[i], k[int(perm[i])])
                   for i in range(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_per_sample_form_with_equal_masks_equals_shared_form():
    rng = np.random.default_rng(8)
    emb = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    t = torch.randn(8, 5, generator=torch.Generator().manual_seed(1))
    perm = permutation(8, "random", rng)
    shared, _ = two_term_loss(sq_dist_loss(t), emb, torch.tensor(0.375), perm)
    per_sample, _ = two_term_loss(sq_dist_loss(t), emb, torch.full((8,), 0.375), perm)
    assert per_sample.item() == pytest.approx(shared.item(), rel=1e-7)


def test_per_sample_filler_weight_is_one_minus_lambda_of_the_mixture_it_filled():
    emb = torch.eye(4)
    t = torch.zeros(4, 4)
    lam = torch.tensor([0.1, 0.2, 0.3, 0.4])
    perm = torch.tensor([1, 2, 3, 0])  # mixture i filled by x_{i+1}
    per = sq_dist_loss(t)  # each row scores 1
    loss, _ = two_term_loss(per, emb, lam, perm)
    # main terms: sum(lam)/4; filler of source j is mixture perm^-1(j) = j - 1
    expected = lam.sum().item() / 4 + sum(1 - lam[(j - 1) % 4].item() for j in range(4)) / 4
    assert loss.item() == pytest.approx(expected)


# ------------------------------------------------------------------------ Un-Mix and erase
def test_unmix_mixup_and_cutmix_lambdas_are_exact():
    n, size = 4, 16
    x = labelled_images(n, size) + 1  # values 1..n, no zeros
    rev = x.flip(0)
    seen = set()
    for seed in range(40):
        out, lam, kind = unmix(x, 0.5, 1.0, np.random.default_rng(seed))
        seen.add(kind)
        if kind == "mixup":
            assert torch.allclose(out, lam * x + (1 - lam) * rev)
        else:
            from_rev = (out == rev) & (x != rev)
            frac = from_rev[0, 0].float().mean().item()
            assert lam == pytest.approx(1 - frac)
    assert seen == {"mixup", "cutmix"}
    assert unmix(x, 1.0, 1.0, np.random.default_rng(0))[2] == "mixup"
    assert unmix(x, 0.0, 1.0, np.random.default_rng(0))[2] == "cutmix"


def test_erase_views_and_fills():
    x = torch.ones(2, 3, 4, 4)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., :, :1] = True
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    fill = erase_fill(x, "zero", mean, std)
    kept, comp = erase(x, mask, fill)
    assert torch.all(kept[..., :1] == 1) and torch.allclose(kept[..., 1:], torch.tensor(-2.0))
    assert torch.allclose(comp[..., :1], torch.tensor(-2.0)) and torch.all(comp[..., 1:] == 1)
    assert float(erase_fill(x, "mean", mean, std)) == 0.0
    noise = erase_fill(x, "noise", mean, std, torch.Generator().manual_seed(0))
    assert noise.shape == x.shape and 0.5 < noise.std().item() < 1.5


def test_erase_objective_by_hand():
    ea = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    eb = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    t = torch.zeros(2, 2)
    loss, _ = erase_loss(sq_dist_loss(t), ea, eb, torch.tensor(0.25))
    assert loss.item() == pytest.approx(0.25 * 1.0 + 0.75 * 2.0)


def test_branch_runner_combines_unmix_and_mixmask_terms():
    cfg = parse_branch_cfg(OmegaConf.create({"mixmask": {"grid": 2}, "unmix": {"enabled": True}}),
                           32, symmetric=False)
    assert cfg.permutation == "random"  # MixMask* default: a different permutation from Un-Mix
    runner = Branches(cfg, seed=0)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t = torch.randn(6, 3 * 32 * 32, generator=torch.Generator().manual_seed(1))
    loss, logs = runner(x, lambda im: im.flatten(1), sq_dist_loss(t))
    assert {"unmix_loss", "unmix_lambda", "mixmask_loss", "mixmask_lambda"} <= set(logs)
    assert loss.item() == pytest.approx(logs["unmix_loss"].item() + logs["mixmask_loss"].item(),
                                        rel=1e-6)
    state = runner.state_dict()
    again = Branches(cfg, seed=123)
    again.load_state_dict(state)
    assert again.rng.random() == runner.rng.random()


# ------------------------------------------------------------------------------- bad configs
@pytest.mark.parametrize("mixmask,unmix,message", [
    ({"grid": 1}, {}, "grid"),
    ({"grid": 33}, {}, "grid"),
    ({"ratio": 0.0}, {}, "ratio"),
    ({"ratio": 1.0}, {}, "ratio"),
    ({"ratio": [0.7, 0.3]}, {}, "reversed"),
    ({"pattern": "stripes"}, {}, "pattern"),
    ({"fill": "blur"}, {}, "fill"),
    ({"permutation": "rotate"}, {}, "permutation"),
    ({}, {"enabled": True, "prob": 1.5}, "prob"),
    ({}, {"enabled": True, "prob": -0.1}, "prob"),
    ({"crops": "both"}, {}, "symmetric"),
    ({"enabled": False}, {}, "enable"),
])
def test_bad_branch_configs_fail_with_a_clear_message(mixmask, unmix, message):
    kw = OmegaConf.create({"mixmask": mixmask, "unmix": unmix})
    with pytest.raises(ConfigError, match=message):
        parse_branch_cfg(kw, 32, symmetric=False)
