import pytest
import torch

from dyninf.measure.attacks import fgsm
from dyninf.network.backbones import cifar_resnet
from dyninf.data.batches import CIFAR10_STD, normalize


def test_fgsm_moves_each_pixel_by_epsilon_within_valid_range_and_raises_the_loss():
    torch.manual_seed(0)
    net = cifar_resnet(8).eval()
    images = torch.randint(30, 220, (6, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(6)
    clean = normalize(images)
    eps = 4 / 255
    adversarial = fgsm(net, images, labels, eps)
    step = (adversarial - clean) * torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)  # back to [0, 1] units
    assert torch.allclose(step.abs(), torch.full_like(step, eps), atol=1e-5)
    loss = torch.nn.functional.cross_entropy
    with torch.no_grad():
        assert loss(net(adversarial), labels) > loss(net(clean), labels)
    assert torch.equal(fgsm(net, images, labels, 0.0), clean)
    with pytest.raises(ValueError, match="non-negative"):
        fgsm(net, images, labels, -0.1)
