import torch

from core.models import recalibrate_batch_norm


def test_batch_norm_recalibration_by_hand():
    # one chunk of values 0, 1, 2, 3: running mean 1.5, running (unbiased) variance (2.25+0.25+0.25+2.25)/3 = 5/3
    bn = torch.nn.Sequential(torch.nn.BatchNorm2d(1, momentum=0.01))
    recalibrate_batch_norm(bn, torch.arange(4.0).view(2, 1, 1, 2))
    torch.testing.assert_close(bn[0].running_mean, torch.tensor([1.5]))
    torch.testing.assert_close(bn[0].running_var, torch.tensor([5 / 3]))
    assert bn[0].momentum == 0.01 and bn.training
