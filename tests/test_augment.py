from __future__ import annotations

import torch

from fer_train.augment import AugmentConfig, augment


def _batch(n: int = 16) -> torch.Tensor:
    return torch.rand(n, 1, 48, 48, generator=torch.Generator().manual_seed(0))


def test_shape_dtype_and_range():
    x = _batch()
    y = augment(x, AugmentConfig(), torch.Generator().manual_seed(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    # Bilinear sampling with border fill never leaves the input's range.
    assert y.min() >= x.min() - 1e-6 and y.max() <= x.max() + 1e-6
    assert not torch.allclose(x, y)
    assert augment(x.to(torch.bfloat16), AugmentConfig(), torch.Generator().manual_seed(1)).dtype == torch.bfloat16


def test_deterministic_under_a_seed_and_different_across_seeds():
    x = _batch()
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment(x, AugmentConfig(), torch.Generator().manual_seed(5))
    c = augment(x, AugmentConfig(), torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_parameters_are_drawn_per_image():
    x = _batch(1).repeat(8, 1, 1, 1)
    y = augment(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert len({tuple(img.flatten()[:50].tolist()) for img in y}) == 8


def test_disabled_is_identity_and_flip_only_mirrors():
    x = _batch(64)
    assert torch.equal(augment(x, AugmentConfig(0, 0, 0, False)), x)
    y = augment(x, AugmentConfig(rotation=0, shift=0, zoom=0, hflip=True), torch.Generator().manual_seed(2))
    flipped = torch.flip(x, dims=[3])
    per_image = [torch.allclose(y[i], x[i], atol=1e-5) or torch.allclose(y[i], flipped[i], atol=1e-5) for i in range(64)]
    assert all(per_image)
    n_flipped = sum(torch.allclose(y[i], flipped[i], atol=1e-5) for i in range(64))
    assert 16 < n_flipped < 48


def test_rejects_wrong_rank():
    import pytest

    with pytest.raises(ValueError, match="N, C, H, W"):
        augment(torch.zeros(48, 48), AugmentConfig())
