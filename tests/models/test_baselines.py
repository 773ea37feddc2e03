import numpy as np
import torch

from models.baselines import BicubicSR, bicubic_upsample, upsample_matrix


def test_first_sample_matches_hand_derived_matlab_weights():
    # output 0 of a x2 upsampling sits at u = -0.25: taps -2..1 mirror to 1, 0, 0, 1 and the Keys
    # weights (a = -0.5) are -0.0234375, 0.2265625, 0.8671875, -0.0703125.
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).view(1, 1, 1, 4)
    out = bicubic_upsample(x, 2)[0, 0, 0]
    assert out.shape == (8,)
    assert float(out[0]) == 1.09375 * 1 - 0.09375 * 2
    # where all 4 taps are inside, cubic convolution reproduces a linear ramp exactly
    ramp = bicubic_upsample(torch.arange(10.0, dtype=torch.float64).view(1, 1, 1, 10), 2)[0, 0, 0]
    np.testing.assert_allclose(ramp[3:17].numpy(), (np.arange(3, 17) + 0.5) / 2 - 0.5)
    assert abs(float(ramp[2]) - 0.75) > 1e-3  # ...and the mirrored border differs from the ramp


def test_rows_sum_to_one_and_constant_stays_constant():
    m = upsample_matrix(7, 3)
    np.testing.assert_allclose(m.sum(axis=1), 1.0)
    x = torch.full((1, 5, 6, 7), 0.37)
    np.testing.assert_allclose(BicubicSR(4)(x).numpy(), 0.37, rtol=1e-6)


def test_bands_are_independent():
    x = torch.rand(1, 3, 5, 4, generator=torch.Generator().manual_seed(0))
    full = bicubic_upsample(x, 2)
    for b in range(3):
        torch.testing.assert_close(full[:, b:b + 1], bicubic_upsample(x[:, b:b + 1], 2))
