from __future__ import annotations

import pytest
import torch
from torch import nn

from fer_train.models import ARCHITECTURES, arch_args, build_model, count_parameters, describe


def test_seed_is_the_write_ups_sixteen_layers():
    model = build_model("seed")
    layers = [m for m in model if not isinstance(m, nn.ReLU)]
    kinds = [type(m).__name__ for m in layers]
    assert kinds == [
        "Conv2d", "BatchNorm2d", "MaxPool2d",
        "Conv2d", "MaxPool2d",
        "Conv2d", "BatchNorm2d", "MaxPool2d",
        "Conv2d", "MaxPool2d",
        "Flatten", "Linear", "Dropout", "Linear", "Dropout", "Linear",
    ]  # fmt: skip
    convs = [m for m in layers if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 64, 128, 256]
    assert all(c.kernel_size == (3, 3) for c in convs)
    assert [m.out_features for m in layers if isinstance(m, nn.Linear)] == [128, 84, 7]


def test_seed_parameter_count_and_output_shape():
    model = build_model("seed")
    # conv weights+biases, two BatchNorms (weight+bias), three linear layers; 48 -> 3x3 after four pools.
    expected = (9 * 1 * 16 + 16) + 2 * 16 + (9 * 16 * 64 + 64) + (9 * 64 * 128 + 128) + 2 * 128 + (9 * 128 * 256 + 256)
    expected += (256 * 3 * 3 * 128 + 128) + (128 * 84 + 84) + (84 * 7 + 7)
    assert count_parameters(model) == expected == 685_223
    assert model.eval()(torch.zeros(5, 1, 48, 48)).shape == (5, 7)
    assert "parameters: 685,223" in describe(model)


def test_valid_padding_variant_builds():
    model = build_model("seed", padding=0)
    assert model.eval()(torch.zeros(2, 1, 48, 48)).shape == (2, 7)


def test_registry_errors_list_valid_names():
    with pytest.raises(ValueError, match="valid: seed"):
        build_model("resnet9000")
    with pytest.raises(ValueError, match="unknown arguments"):
        build_model("seed", width=3)
    assert arch_args("seed", dropout=0.1)["dropout"] == 0.1
    assert set(ARCHITECTURES) >= {"seed"}
