"""The learning rules of the non-convolutional systems, as pure functions: each returns a weight
change (or the new weights) and leaves its arguments alone. The models (`models/itsadeepizza2023`,
`tavanaei2017`, `lagacherie2024`) are thin learner objects that simulate their neurons and apply
these. The convolutional rules (STDP, R-STDP) are in `spiking.learning`.
"""
from __future__ import annotations

import torch


def pair_stdp_sums(pre: torch.Tensor, post: torch.Tensor, tau: float):
    """Pair-based STDP sums over all spike pairs with exponential traces:

        LTP[b, n, m] = sum over post spikes t of n, pre spikes s < t of m: exp(-(t - s) / tau)
        LTD[b, n, m] = sum over pre spikes s of m, post spikes t <= s of n: exp(-(s - t) / tau)

    The traces are linear in the spike trains, so both sums are matmuls with a [T, T] kernel:
    LTP = post^T K_< pre with K_<[t, s] = exp(-(t - s) / tau) for s < t, and
    LTD = (K_<= post)^T pre with K_<=[t, s] = exp(-(t - s) / tau) for s <= t.

    Shape: pre [B, T, M], post [B, T, N] -> (LTP [B, N, M], LTD [B, N, M]).
    """
    steps = pre.shape[1]
    t = torch.arange(steps, device=pre.device, dtype=pre.dtype)
    lag = t.view(-1, 1) - t.view(1, -1)                          # [T, T]: t - s
    kernel = torch.exp(-lag.clamp(min=0) / tau)
    strictly = torch.where(lag > 0, kernel, torch.zeros_like(kernel))
    inclusive = torch.where(lag >= 0, kernel, torch.zeros_like(kernel))
    ltp = post.transpose(1, 2) @ (strictly @ pre)                # [B, N, M]
    ltd = (inclusive @ post).transpose(1, 2) @ pre
    return ltp, ltd


def reward_modulated_pair_stdp(weight: torch.Tensor, pre: torch.Tensor, post: torch.Tensor,
                               reward: torch.Tensor, learning_rate: float, a_plus: float,
                               a_minus: float, tau: float) -> torch.Tensor:
    """R-STDP with pair traces and a soft bound (itsadeepizza 2023), averaged over the batch:

        dW = mean_b  lr * r[b, n] * W (1 - W) * (a_plus * LTP[b] - a_minus * LTD[b])

    Shape: weight [N, M], pre [B, T, M], post [B, T, N], reward [B, N] -> dW [N, M].
    """
    ltp, ltd = pair_stdp_sums(pre, post, tau)
    bound = weight * (1 - weight)
    delta = learning_rate * reward.unsqueeze(2) * bound * (a_plus * ltp - a_minus * ltd)
    return delta.mean(dim=0)


def bp_stdp_deltas(target: torch.Tensor, counts_in: torch.Tensor, counts_hidden: torch.Tensor,
                   fired: torch.Tensor, output_weight: torch.Tensor, gate: str = "count"):
    """BP-STDP (Tavanaei & Maida) over one window, summed over the batch:

        xi = target - fired                     (+1 silent target, -1 firing non-target)
        dW_out = sum_b xi (x) c_hid
        delta_h = g_h * sum_j xi_j W_out[j, h]  (g = hidden counts, or 1[count > 0] for "indicator")
        dW_hid = sum_b delta (x) c_in

    with the pre-update `output_weight`. Shape: target, fired [B, N]; counts_in [B, M];
    counts_hidden [B, H]; output_weight [N, H] -> (dW_out [N, H], dW_hid [H, M]).
    """
    error = target - fired
    gating = counts_hidden if gate == "count" else (counts_hidden > 0).float()
    delta = gating * (error @ output_weight)                     # [B, H]
    return torch.einsum("bn,bh->nh", error, counts_hidden), torch.einsum("bh,bm->hm", delta, counts_in)


def centred_hebbian_sum(pre: torch.Tensor, post: torch.Tensor, mean_input: torch.Tensor) -> torch.Tensor:
    """One step's Hebbian term with the input centred on its running mean, summed over the batch:
    sum_b (pre[b] - mean) (x) post[b].

    Shape: pre [B, M], post [B, N], mean_input [M] -> [M, N].
    """
    return (pre - mean_input).t() @ post


def normalized_hebbian_weights(weight: torch.Tensor, hebbian: torch.Tensor, batch: int,
                               learning_rate: float, weight_norm: float) -> torch.Tensor:
    """Lagacherie's usable-mode update: W + lr * H / B, clamped to [0, 1], then every column
    (one neuron's input weights) rescaled to sum to `weight_norm`.

    Shape: weight, hebbian [M, N] -> new weights [M, N].
    """
    weight = (weight + learning_rate * hebbian / batch).clamp(0, 1)
    return weight * (weight_norm / weight.sum(dim=0, keepdim=True).clamp(min=1e-12))


def sign_hebbian_delta(x: torch.Tensor, spikes: torch.Tensor, threshold: float, step: float) -> torch.Tensor:
    """Lagacherie's faithful-mode rule: inputs above `threshold` strengthen, the others weaken,
    their synapses onto the neurons that spiked: step * sign (x) spikes.

    Shape: x [M], spikes [N] -> [M, N].
    """
    sign = (x > threshold).to(x.dtype) * 2 - 1
    return step * torch.outer(sign, spikes)
