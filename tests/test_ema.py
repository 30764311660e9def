"""EMA of the generator's weights: traiNNer-redux's warm-up (ema_power) and switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from traiNNer.models.ema import EMA


def test_decay_warms_up_with_ema_power_and_is_capped_by_ema_decay() -> None:
    ema = EMA(nn.Linear(2, 2), decay=0.999, update_after_step=10, power=0.75)
    assert [ema.decay_at(i) for i in (1, 10, 11)] == [0.0, 0.0, 0.0]  # plain copies
    assert ema.decay_at(12) == pytest.approx(1 - 2**-0.75)
    assert ema.decay_at(1011) == pytest.approx(1 - 1001**-0.75)
    assert ema.decay_at(10**6) == 0.999
    # The default power 10 is upstream's "no warm-up": the cap from the first update on.
    assert EMA(nn.Linear(2, 2), decay=0.99).decay_at(2) == 0.99


def test_update_follows_the_decay_and_copy_into_switches_the_weights() -> None:
    net = nn.Linear(2, 2, bias=False)
    ema = EMA(net, decay=0.5, power=10.0)
    with torch.no_grad():
        net.weight.fill_(1.0)
    ema.update(net, 1)  # a copy
    with torch.no_grad():
        net.weight.fill_(3.0)
    ema.update(net, 2)  # decay min(0.5, 1 - 2^-10) = 0.5: halfway
    assert torch.allclose(ema.net.weight, torch.full((2, 2), 2.0))
    ema.copy_into(net)
    assert torch.equal(net.weight, ema.net.weight)
