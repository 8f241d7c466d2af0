"""Exact batched learning: the per-sample algorithm computed for a whole batch.

- `reinforce_sequential_`: R-STDP of a one-winner decision layer by speculative rounds (decide
  the batch, verify each sample with the kernel rows it would really see, commit up to the first
  changed decision); a one-position decision on the CPU goes to `compiled.reinforce_whole_map_`.
- `chained_versions`: the rows a sequence of single-sample updates leaves, vectorised per level
  of repetition of a feature (used here and by `STDP.update_sequential`).
- `NEGLIGIBLE_WEIGHT`: an update moving only weights below it cannot change a forward pass whose
  threshold is at least `MIN_SHORTCUT_THRESHOLD` (conv STDP's chunks, `models.layers`).

The rules are duck-typed (`STDP` / `RSTDP` of `spiking.learning`), which imports from here.
"""
from __future__ import annotations

import torch

from . import compiled
from . import functional as sf
from .remember import mark_within_bounds, within_bounds

# an update that moves only weights below this (before and after) changes no float32 potential
# that can reach a threshold >= MIN_SHORTCUT_THRESHOLD: their sum, at most ~1e-15 over any
# receptive field, is absorbed by any addend >= 2**-20, and a potential without one stays below
# 0.01 (see `STDP.update_sequential`)
NEGLIGIBLE_WEIGHT = 2.0 ** -64
MIN_SHORTCUT_THRESHOLD = 0.01



def decision_picks(potentials: torch.Tensor, time_steps: int,
                   allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The one-winner decision of a layer that fires only at its last step, on flat rows.

    As `get_k_winners(k=1, r=0)` of `fire(potentials)`: only positive potentials spike;
    `score = p + T * max(p)` in float32; the first flat index `feature * L + position` among
    equal scores wins; no positive potential is silence.

    `allowed` (bool [N]): only these may spike (the others count as potential 0).

    Shape: potentials [B, N] (N = F * L flattened) -> (flat index [B] long, silent [B] bool).
    """
    spiking = potentials > 0
    if allowed is not None:
        spiking &= allowed
    truncated = torch.where(spiking, potentials, 0.0)
    v = truncated.amax(dim=1, keepdim=True).mul_(time_steps)
    best, index = torch.where(spiking, truncated + v, 0.0).max(dim=1)
    return index, best == 0


def rule_step(rows: torch.Tensor, rates: torch.Tensor, use_stabilizer: bool, lower: float,
               upper: float) -> torch.Tensor:
    """One sample's update of its winner's kernel rows [N, K]: `apply_stdp_` on a row."""
    if use_stabilizer:
        rows = rows + rates * ((rows - lower) * (upper - rows))
    else:
        rows = rows + rates
    return rows.clamp_(lower, upper)


def chained_versions(flat_weight: torch.Tensor, features: torch.Tensor, rates: torch.Tensor,
                     use_stabilizer: bool, lower: float, upper: float):
    """The rows left by N updates applied in order, each acting on the row its feature was left
    in by the previous update of that feature (or the weight's own row): one vectorised pass
    per level of repetition of a feature.

    Shape: flat_weight [F, K], features LongTensor [N] (in application order), rates [N, K] ->
    (versions [N, K]; previous [N], the index of the same feature's previous update or -1;
    following [N], the index of its next update or N).
    """
    count = len(features)
    order = torch.arange(count, device=features.device)
    same = features.unsqueeze(0) == features.unsqueeze(1)
    before = order.unsqueeze(0) < order.unsqueeze(1)                  # [a, b]: b comes before a
    following = torch.where(same & before.t(), order.unsqueeze(0), count).amin(dim=1) \
        if count else order
    previous = torch.full_like(order, -1)
    has_next = following < count
    previous[following[has_next]] = order[has_next]
    level = (same & before).sum(dim=1)                               # earlier updates of the feature
    versions = torch.empty_like(rates)
    for depth in range(int(level.max()) + 1 if count else 0):
        at = (level == depth).nonzero().flatten()
        rows = flat_weight[features[at]] if depth == 0 else versions[previous[at]]
        versions[at] = rule_step(rows, rates[at], use_stabilizer, lower, upper)
    return versions, previous, following


def teacher_picks(potentials: torch.Tensor, labels: torch.Tensor, feature_class: torch.Tensor,
                  cells: int, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """The teacher's pick on flat rows: the label class's neuron with the largest final
    potential, spiking or not (the first flat index `feature * L + position` among equal ones),
    or -1 where the class has no neuron that may win (`allowed`, bool [N]).

    Shape: potentials [B, N] (N = F * L), labels [B], feature_class [F] -> flat index [B] long.
    """
    mine = (feature_class.unsqueeze(0) == labels.unsqueeze(1)).repeat_interleave(cells, dim=1)
    if allowed is not None:
        mine &= allowed
    index = torch.where(mine, potentials, float("-inf")).argmax(dim=1)
    return torch.where(mine.any(dim=1), index, -1)


@torch.no_grad()
def reinforce_sequential_(rule: "RSTDP", final: torch.Tensor, labels: torch.Tensor,
                          feature_class: torch.Tensor, time_steps: int, padding=0,
                          allowed: torch.Tensor | None = None,
                          teacher: torch.Tensor | None = None):
    """R-STDP of a one-winner decision layer, sample after sample, computed for a whole batch.

    The algorithm is SpykeTorch's per-sample loop: sample i decides with the weights left by
    samples 0..i-1 (largest final potential, `decision_picks`), is rewarded (+1: its winner's
    class `feature_class[f]` equals the label), punished (-1) or, when silent, left alone; its
    winner's kernel then gets `W[f] += rate` (`rate = a_plus` where the input spiked, `a_minus`
    elsewhere; with the stabiliser `rate * (W - lower)(upper - W)`) and the weights are clamped.

    `teacher` (rates [2, F], (a_plus, a_minus) per feature; an option, not SpykeTorch's): a
    punished sample also updates the label class's neuron with the largest final potential
    (`teacher_picks`, on the same potentials the sample decided on) with these rates at that
    neuron's position, after its winner's update.

    A decision read at one position on the CPU runs as one compiled loop instead
    (`compiled.reinforce_whole_map_`: the same bits, faster than the summed mode). Elsewhere it is
    computed speculatively. One sample's update changes only its winner's kernel (and its
    teacher pick's), so every later sample's potentials stay valid but for the features changed
    before it:

    1. guess every remaining sample's decision (and teacher pick) from the batch's potentials
       (one convolution per batch, kept up to date as rounds commit and corrections apply);
    2. build the kernel row ("version") each guessed update would create (a feature updated
       twice gets two), and the potentials of every remaining sample under every version (one
       convolution with that many output channels);
    3. re-decide each sample with the rows it really sees (the latest version of each feature
       updated before it). Up to the first sample whose decision (or teacher pick) differs
       every guess was right: those samples are committed. That sample's re-decision is exact
       too (every row it saw was), so it is applied (a one-channel convolution per changed row
       brings the rest of the batch up to date), and the next round starts after it.

    A batch whose guesses all hold costs one convolution of the batch and one small one; each
    wrong guess costs another small round over the rest of the batch (on MNIST, about one per
    batch of 32 in the first epochs, fewer as the adaptive rates shrink). Weights outside the
    bounds (the initial N(0.8, 0.05) decision weights) are clamped as a whole by the first
    update, which is therefore applied on its own. Results equal a loop of single-sample steps
    up to the float32 summation order of the potentials (tests compare decisions, winners and
    weights across batch sizes).

    `allowed` (bool [F], dropout): only these features may win, as if the others' weights
    were zero (they then never win, so their weights never change either).

    `padding`: the zero padding on each side, one int or (rows, cols).

    Shape: final [B, C, H, W] (binary), labels [B], feature_class LongTensor [F] ->
    (winners LongTensor [B, 1, 3] of (feature, row, col), -1 when silent; the final potentials
    each sample decided on [B, F, h, w]).
    """
    weight = rule.conv_layer.weight
    if compiled.whole_map_usable(final, weight, padding):
        # one position: the same loop compiled, on the CPU (`spiking.compiled`)
        return compiled.reinforce_whole_map_(rule, final, labels, feature_class, time_steps, padding,
                                             allowed, teacher)
    lower, upper = rule.reward.lower_bound, rule.reward.upper_bound
    stabilize = rule.reward.use_stabilizer
    features, channels, kh, kw = weight.shape
    batch, device = final.shape[0], final.device
    flat_weight = weight.view(features, -1)
    rows, cols = (padding, padding) if isinstance(padding, int) else tuple(padding)
    padding = (rows, cols)
    padded = torch.nn.functional.pad(final, (cols, cols, rows, rows))
    out_h, out_w = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    cells = out_h * out_w
    allowed = None if allowed is None else allowed.to(device).repeat_interleave(cells)     # [F * L]
    s = padded.stride()
    fields = padded.as_strided((batch, out_h, out_w, channels, kh, kw), (s[0], s[2], s[3], s[1], s[2], s[3]))
    labels = labels.to(device)
    potentials = sf.conv2d(final, weight, padding=padding).flatten(2)  # [B, F, L]
    # the weight's version after that call, and the features changed since (to patch a
    # whole-map decision's remembered matrix, `sf.patch_whole_map_matrix`; None: all clamped)
    since, moved = weight._version, []
    seen = torch.empty_like(potentials)                               # what each sample decided on
    winners = torch.full((batch, 1, 3), -1, dtype=torch.long, device=device)
    ids = torch.arange(batch, device=device)
    bounded = within_bounds(weight, lower, upper)

    def record(at, flat):
        winners[at, 0, 0], winners[at, 0, 1], winners[at, 0, 2] = flat // cells, flat % cells // out_w, flat % cells % out_w

    def rates_of(at, flat, reward):
        """Rate rows [N, K] of samples `at` updating neuron `flat` with `reward` (+1, -1; 2:
        the teacher's rates): pre >= post = 1."""
        cell = flat % cells
        spiked = fields[at, cell // out_w, cell % out_w].flatten(1) > 0
        return _sample_rates(rule, reward, flat // cells, spiked, teacher)

    def picks(rows, at):
        """(decision flat index, silent, reward, teacher flat index or -1) of rows [n, F * L]
        of samples `at`."""
        index, silent = decision_picks(rows, time_steps, allowed)
        reward = torch.where(silent, 0, torch.where(feature_class[index // cells] == labels[at], 1, -1))
        taught = torch.full_like(index, -1)
        if teacher is not None:
            picked = teacher_picks(rows, labels[at], feature_class, cells, allowed)
            taught = torch.where(reward < 0, picked, -1)
        return index, silent, reward, taught

    def apply_one(at, flat, reward):
        """Sample `at`'s update of neuron `flat` on the weights as they are; its feature."""
        f = int(flat) // cells
        rates = rates_of(ids[at:at + 1], flat.view(1), reward.view(1))
        flat_weight[f] = rule_step(flat_weight[f:f + 1], rates, stabilize, lower, upper)[0]
        moved.append(f)
        return f

    start = 0
    while start < batch:
        rest = potentials[start:]
        count = rest.shape[0]
        index, silent, reward, taught = picks(rest.flatten(1), ids[start:])   # guesses; the first is exact
        primary = (reward != 0).nonzero().flatten()                   # round-relative samples
        if not bounded:
            # nothing has changed yet, so these decisions are exact up to the first update, which
            # also clamps every feature: apply it (and its teacher's) alone and recompute the rest
            stop = int(primary[0]) if len(primary) else count
            seen[start:start + stop + 1] = rest[:stop + 1]
            if stop < count:
                here = start + stop
                record(ids[here:here + 1], index[stop:stop + 1])
                apply_one(here, index[stop], reward[stop])
                weight.clamp_(lower, upper)
                since = None
                if taught[stop] >= 0:
                    apply_one(here, taught[stop], reward.new_tensor(2))
                bounded = True
                if here + 1 < batch:
                    potentials[here + 1:] = sf.conv2d(final[here + 1:], weight, padding=padding).flatten(2)
                    since, moved = weight._version, []
            start += stop + 1
            continue
        # ---- the updates the guesses would make, in order (a sample's winner, then its teacher's)
        second = (taught >= 0).nonzero().flatten()
        samples = torch.cat((primary, second))
        flats = torch.cat((index[primary], taught[second]))
        signs = torch.cat((reward[primary], torch.full_like(second, 2)))
        order = torch.sort(samples * 2 + (signs == 2).long(), stable=True).indices
        samples, flats, signs = samples[order], flats[order], signs[order]
        f_up = flats // cells
        rates = rates_of(start + samples, flats, signs)
        versions, _, after = chained_versions(flat_weight, f_up, rates, stabilize, lower, upper)
        # the round-relative sample of each version's successor (count: none)
        last = max(len(samples) - 1, 0)
        following = torch.where(after < len(samples), samples[after.clamp(max=last)], count)
        # ---- every remaining sample under the versions created before it: one convolution
        checked = rest.clone()
        if len(samples):
            kernels = versions.view(-1, channels, kh, kw)
            version_potentials = sf.conv2d(final[start:], kernels, padding=padding).flatten(2)   # [n, u, L]
            order = ids[:count].unsqueeze(1)
            sees = (samples.unsqueeze(0) < order) & (order <= following.unsqueeze(0))   # [n, u]
            sample_ids, version_ids = sees.nonzero(as_tuple=True)
            checked[sample_ids, f_up[version_ids]] = version_potentials[sample_ids, version_ids]
            index2, silent2, _, taught2 = picks(checked.flatten(1), ids[start:])
            wrong = ((index2 != index) | (silent2 != silent) | (taught2 != taught)).nonzero().flatten()
            good = int(wrong[0]) if len(wrong) else count
        else:
            index2, silent2, taught2, good = index, silent, taught, count
        # ---- commit the samples whose guesses held: start .. start + good - 1
        seen[start:start + good] = checked[:good]
        take = ids[:good][~silent[:good]]
        record(start + take, index[take])
        latest = (samples < good) & (following >= good)
        if bool(latest.any()):
            flat_weight[f_up[latest]] = versions[latest]
            moved.extend(f_up[latest].tolist())
        if good == count:
            break
        # the rest of the batch now sees the committed rows
        if bool(latest.any()):
            potentials[start + good:, f_up[latest]] = version_potentials[good:, latest]
        # ---- the first wrong guess, re-decided on exact potentials: apply it
        here = start + good
        seen[here] = checked[good]
        if not bool(silent2[good]):
            record(ids[here:here + 1], index2[good:good + 1])
            f = int(index2[good]) // cells
            sign = (feature_class[f] == labels[here]).long() * 2 - 1
            changed = [apply_one(here, index2[good], sign)]
            if taught2[good] >= 0:
                changed.append(apply_one(here, taught2[good], sign.new_tensor(2)))
            if here + 1 < batch:     # the rest of the batch sees the corrected rows from now on
                for f in changed:
                    row = sf.conv2d(final[here + 1:], weight[f:f + 1], padding=padding)
                    potentials[here + 1:, f] = row.flatten(1)
        start = here + 1
    if bounded:
        mark_within_bounds(weight, lower, upper)
    if since is not None and moved:
        sf.patch_whole_map_matrix(weight, torch.tensor(sorted(set(moved)), device=device), since)
    return winners, seen.view(batch, features, out_h, out_w)


def _sample_rates(rule: "RSTDP", reward: torch.Tensor, feature: torch.Tensor,
                  spiked: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
    """Per-update rate rows [N, K]: the reward (+1) or punish (-1) rule's, or with `reward` 2
    the `teacher` rates [2, F] (a_plus where the input spiked, a_minus elsewhere), of each
    update's feature."""
    plus = torch.where(reward > 0, rule.reward.a_plus[feature], rule.punish.a_plus[feature])
    minus = torch.where(reward > 0, rule.reward.a_minus[feature], rule.punish.a_minus[feature])
    if teacher is not None:
        plus = torch.where(reward == 2, teacher[0][feature], plus)
        minus = torch.where(reward == 2, teacher[1][feature], minus)
    return torch.where(spiked, plus.unsqueeze(1), minus.unsqueeze(1))
