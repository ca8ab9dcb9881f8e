import torch

from core.models import ConvAutoencoder, MLPAutoencoder, prefer_channels_last, recalibrate_batch_norm


def test_batch_norm_recalibration_by_hand():
    # one chunk of values 0, 1, 2, 3: running mean 1.5, running (unbiased) variance (2.25+0.25+0.25+2.25)/3 = 5/3
    bn = torch.nn.Sequential(torch.nn.BatchNorm2d(1, momentum=0.01))
    recalibrate_batch_norm(bn, torch.arange(4.0).view(2, 1, 1, 2))
    torch.testing.assert_close(bn[0].running_mean, torch.tensor([1.5]))
    torch.testing.assert_close(bn[0].running_var, torch.tensor([5 / 3]))
    assert bn[0].momentum == 0.01 and bn.training


def test_convolutional_models_and_their_images_go_channels_last_with_the_same_values():
    torch.manual_seed(0)
    model, x = ConvAutoencoder((1, 16, 16), 10), torch.rand(8, 1, 16, 16)
    codes = model.encode(x)
    model, moved = prefer_channels_last(model, x)
    assert moved.is_contiguous(memory_format=torch.channels_last) and torch.equal(moved, x)
    assert model.encoder[0].weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(model.encode(moved), codes, rtol=1e-4, atol=1e-5)  # another kernel, same function
    assert model.decode(codes).shape == x.shape


def test_an_mlp_and_its_images_stay_as_they_are():
    model, x = MLPAutoencoder((1, 8, 8), 10), torch.rand(4, 1, 8, 8)
    same_model, same_x = prefer_channels_last(model, x)
    assert same_model is model and same_x is x
