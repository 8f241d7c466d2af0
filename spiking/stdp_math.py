"""The arithmetic of convolutional STDP, as pure functions (no module state): the per-synapse
rates of a batch's winners (`winner_rates`, summed per feature by `stdp_rates`) and their
application to a weight tensor (`apply_stdp_`). The rules that hold rates and call these
(`STDP`, `RSTDP`) are in `spiking.learning`, which re-exports them.

For one winner `(f, i, j)` of one sample and every synapse `(c, u, v)` of feature `f`:

    pre  = number of spiking steps of input (c, i + u, j + v)     (0 if it never spiked)
    post = number of spiking steps of the winner
    rate = a_plus[f] if pre >= post, a_minus[f] otherwise
"""
from __future__ import annotations

import torch


def as_winner_tensor(winners, batch: int, device) -> torch.Tensor:
    """Winners as LongTensor [B, k, 3]; a SpykeTorch-style list of (f, i, j) is one sample's."""
    if isinstance(winners, torch.Tensor):
        tensor = winners.to(device=device, dtype=torch.long)
    else:
        rows = [tuple(int(v) for v in w) for w in winners]
        if batch != 1:
            raise ValueError(f"a list of (feature, row, col) winners describes one sample, "
                             f"but the batch has {batch}; pass a LongTensor [B, k, 3]")
        tensor = torch.tensor(rows, dtype=torch.long, device=device).view(1, len(rows), 3)
    if tensor.dim() != 3 or tensor.shape[0] != batch or tensor.shape[2] != 3:
        raise ValueError(f"winners must be a LongTensor [B={batch}, k, 3] of (feature, row, col), "
                         f"got shape {tuple(tensor.shape)}")
    return tensor


def check_winners(winners: torch.Tensor, features: int, rows: int, cols: int) -> None:
    """Every winner is a row of -1 (padding) or lies inside the [features, rows, cols] map."""
    valid = winners[..., 0] >= 0
    limits = torch.tensor([features, rows, cols], device=winners.device)
    inside = ((winners >= 0) & (winners < limits)).all(dim=-1)
    padding = (winners == -1).all(dim=-1)
    if not bool((torch.where(valid, inside, padding)).all()):
        raise ValueError(f"winners do not match the layer: each must be -1 padding or a "
                         f"(feature < {features}, row < {rows}, col < {cols})")


def winner_rates(pre_counts: torch.Tensor, post_counts: torch.Tensor, winners: torch.Tensor,
                 a_plus: torch.Tensor, a_minus: torch.Tensor, kernel_size):
    """Per-synapse learning rates of every winner, one row per (sample, feature) (pure).

    A later winner of the same sample with the same feature supersedes an earlier one; rows of
    -1 are padding. Returns `(sample, feature, rates)`: LongTensors [N] in (sample, winner)
    order and rates [N, C, kh, kw] (`a_plus` where `pre >= post`, `a_minus` elsewhere).

    Shape: as `stdp_rates`.
    """
    batch, channels = pre_counts.shape[:2]
    kh, kw = kernel_size
    device = pre_counts.device
    feature, row, col = winners.unbind(-1)                       # [B, k] each
    valid = feature >= 0
    k = winners.shape[1]
    later = torch.triu(torch.ones(k, k, dtype=torch.bool, device=device), diagonal=1)
    same = (feature.unsqueeze(2) == feature.unsqueeze(1)) & later & valid.unsqueeze(1)
    used = (valid & ~same.any(dim=2)).flatten()
    sample = torch.arange(batch, device=device).repeat_interleave(k)[used]
    f, r, c = feature.flatten()[used], row.flatten()[used], col.flatten()[used]
    r_index = (r.unsqueeze(1) + torch.arange(kh, device=device)).view(-1, 1, kh, 1)
    q_index = (c.unsqueeze(1) + torch.arange(kw, device=device)).view(-1, 1, 1, kw)
    c_index = torch.arange(channels, device=device).view(1, channels, 1, 1)
    patches = pre_counts[sample.view(-1, 1, 1, 1), c_index, r_index, q_index]   # [N, C, kh, kw]
    post = post_counts.flatten()[used].to(patches.dtype)
    paired = patches >= post.view(-1, 1, 1, 1)
    if a_plus.dim() == 1:
        plus, minus = a_plus[f], a_minus[f]
    else:
        plus, minus = a_plus[sample, f], a_minus[sample, f]
    return sample, f, torch.where(paired, plus.view(-1, 1, 1, 1), minus.view(-1, 1, 1, 1))


def stdp_rates(pre_counts: torch.Tensor, post_counts: torch.Tensor, winners: torch.Tensor,
               a_plus: torch.Tensor, a_minus: torch.Tensor, kernel_size):
    """Per-synapse learning rates of a batch of winners, summed over the batch (pure).

    Only winning features get rates, so they come back compact: `(features, rates)` with the
    sorted distinct winning features [U] and their summed rates [U, C, kh, kw]
    (`dense_rates` expands them to the whole [F, C, kh, kw]).

    Shape: pre_counts [B, C, H, W] (spiking steps of every input), post_counts [B, k] (spiking
    steps of each winner), winners LongTensor [B, k, 3] (rows of -1 ignored), a_plus / a_minus
    [F] per feature or [B, F] per sample.
    """
    channels = pre_counts.shape[1]
    kh, kw = kernel_size
    _, f, rates = winner_rates(pre_counts, post_counts, winners, a_plus, a_minus, kernel_size)
    features, slot = torch.unique(f, sorted=True, return_inverse=True)
    if features.numel() == 0:          # no winner in the batch (or an empty batch): no rates
        return features, rates.new_zeros((0, channels, kh, kw))
    # sum the winners of each feature: a one-hot matmul is deterministic on every device
    one_hot = torch.nn.functional.one_hot(slot, features.numel()).to(rates.dtype)   # [N, U]
    summed = (one_hot.t() @ rates.reshape(rates.shape[0], -1)).view(-1, channels, kh, kw)
    return features, summed


def dense_rates(features: torch.Tensor, rates: torch.Tensor, count: int) -> torch.Tensor:
    """Expand compact `(features, rates)` to rates of all `count` features [F, C, kh, kw]."""
    dense = rates.new_zeros((count,) + tuple(rates.shape[1:]))
    dense[features] = rates
    return dense


def apply_stdp_(weight: torch.Tensor, features: torch.Tensor, rates: torch.Tensor,
                use_stabilizer: bool, lower_bound: float, upper_bound: float) -> torch.Tensor:
    """`W[f] += rates * ((W[f] - lower)(upper - W[f]))` (or `W[f] += rates`) for the winning
    features, then clamp the whole weight tensor to the bounds."""
    if features.numel():
        rows = weight[features]
        if use_stabilizer:
            rows += rates * ((rows - lower_bound) * (upper_bound - rows))
        else:
            rows += rates
        weight[features] = rows
    return weight.clamp_(lower_bound, upper_bound)
