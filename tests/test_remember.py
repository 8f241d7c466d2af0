"""`spiking.remember`: derived values kept on a tensor until its storage or version changes."""
import torch

from spiking.remember import patch_remembered, remembered


def test_a_value_is_rebuilt_after_an_in_place_change_or_new_storage_and_refilled_in_place():
    weight = torch.nn.Parameter(torch.ones(3, 2), requires_grad=False)
    builds = []

    def build():
        builds.append(1)
        return weight.detach() * 2

    first = remembered(weight, "_doubled", "x", build, lambda old: old.copy_(weight * 2))
    assert remembered(weight, "_doubled", "x", build) is first and len(builds) == 1
    weight.add_(1)                                          # a new version: refilled in place
    again = remembered(weight, "_doubled", "x", build, lambda old: old.copy_(weight * 2))
    assert again is first and torch.equal(again, torch.full((3, 2), 4.0)) and len(builds) == 1
    assert remembered(weight, "_doubled", "y", build) is not first and len(builds) == 2   # another extra
    weight.data = torch.zeros(3, 2)                         # new storage, the same version counter
    assert torch.equal(remembered(weight, "_doubled", "y", build), torch.zeros(3, 2))


def test_a_patch_re_keys_its_version_and_a_patch_from_another_version_forgets():
    weight = torch.zeros(4)
    value = remembered(weight, "_copy", None, lambda: weight.clone())
    since = weight._version
    weight[1] = 5.0
    patch_remembered(weight, "_copy", since, lambda copy, _: copy.__setitem__(1, 5.0))
    assert remembered(weight, "_copy", None, lambda: None) is value and float(value[1]) == 5.0
    since = weight._version
    weight[2] = 1.0
    weight[3] = 1.0
    patch_remembered(weight, "_copy", since - 1, lambda copy, _: None)     # not from this version
    assert weight._copy is None
    with torch.inference_mode():
        frozen = torch.ones(2)
        assert torch.equal(remembered(frozen, "_x", None, lambda: frozen + 1), torch.full((2,), 2.0))
