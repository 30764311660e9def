from spandrel.architectures.ParagonSR2 import ParagonSR2, ParagonSR2Arch

from .util import assert_loads_correctly, assert_size_requirements, skip_if_unchanged

skip_if_unchanged(__file__)


def test_load():
    assert_loads_correctly(
        ParagonSR2Arch(),
        lambda: ParagonSR2(),
        lambda: ParagonSR2(scale=1),
        lambda: ParagonSR2(scale=2),
        lambda: ParagonSR2(scale=3),
        lambda: ParagonSR2(scale=8),
        # traiNNer-auto's presets: nano, micro, tiny, xs, s, m
        lambda: ParagonSR2(num_feat=12, num_groups=1, num_blocks=1, ffn_expansion=6.0),
        lambda: ParagonSR2(num_feat=16, num_groups=1, num_blocks=2),
        lambda: ParagonSR2(num_feat=24, num_groups=2, num_blocks=2),
        lambda: ParagonSR2(num_feat=32, num_groups=2, num_blocks=3),
        lambda: ParagonSR2(num_feat=48, num_groups=3, num_blocks=4),
        lambda: ParagonSR2(
            num_feat=64,
            num_groups=4,
            num_blocks=6,
            ffn_expansion=3.75,
            channel_modulation=True,
        ),
        lambda: ParagonSR2(num_feat=20, num_groups=3, num_blocks=1, ffn_expansion=1.5),
        lambda: ParagonSR2(channel_modulation=True),
        lambda: ParagonSR2(channel_modulation=True, modulation_reduction=8),
        lambda: ParagonSR2(upsampler_alpha=0.0),
        lambda: ParagonSR2(upsampler_alpha=0.7, scale=2),
    )


def test_size_requirements():
    # No size requirement: edge replication and 3x3 convolutions take any size.
    arch = ParagonSR2Arch()
    assert_size_requirements(arch.load(ParagonSR2(scale=2, num_feat=16).state_dict()))
    assert_size_requirements(
        arch.load(
            ParagonSR2(scale=3, num_feat=16, channel_modulation=True).state_dict()
        )
    )
