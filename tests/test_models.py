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
    with pytest.raises(ValueError, match="valid: .*seed, vgg"):
        build_model("resnet9000")
    with pytest.raises(ValueError, match="unknown arguments"):
        build_model("seed", width=3)
    assert arch_args("seed", dropout=0.1)["dropout"] == 0.1
    assert set(ARCHITECTURES) >= {"seed"}


def _randomise_batchnorm(model: nn.Module) -> None:
    """Fresh BatchNorms are identities; random statistics make a wrong fold visible."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)


@pytest.mark.parametrize(("cin", "cout", "groups"), [(1, 16, 1), (16, 16, 1), (16, 32, 1), (24, 24, 24)])
def test_repconv_folds_into_one_conv_with_the_same_output(cin, cout, groups):
    from fer_train.models import RepConv

    torch.manual_seed(0)
    block = RepConv(cin, cout, groups=groups)
    _randomise_batchnorm(block)
    block.eval()
    fused = block.fused()
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].kernel_size == (3, 3) and convs[0].groups == groups
    assert (block.bn_id is not None) == (cin == cout)  # the identity branch exists only where shapes match
    x = torch.randn(3, cin, 12, 12)
    torch.testing.assert_close(fused(x), block(x), atol=1e-5, rtol=1e-5)


def test_rep_family_folds_for_inference_and_leaves_the_trained_model_alone():
    from fer_train.models import RepConv, for_inference

    torch.manual_seed(0)
    model = build_model("rep-fast")
    _randomise_batchnorm(model)
    model.eval()
    folded = for_inference(model)
    assert not any(isinstance(m, RepConv) for m in folded.modules())
    assert sum(isinstance(m, RepConv) for m in model.modules()) == 8  # the original keeps its branches
    assert not folded.training
    x = torch.randn(4, 1, 48, 48)
    torch.testing.assert_close(folded(x), model(x), atol=1e-4, rtol=1e-4)
    # depthwise-separable stages: a depthwise 3x3 then a 1x1 per block, after the two full stages
    depthwise = [m for m in folded.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [m.in_channels for m in depthwise] == [32, 96, 96, 192, 192, 384]


def test_rep_family_rejects_inconsistent_shapes():
    with pytest.raises(ValueError, match="equal length"):
        build_model("rep", separable=(0, 1))
    with pytest.raises(ValueError, match="first stage cannot be separable"):
        build_model("rep", separable=(1, 0, 0, 0))
    with pytest.raises(ValueError, match="too small"):
        build_model("rep", widths=(8,) * 7, blocks=(1,) * 7, separable=(0,) * 7)
