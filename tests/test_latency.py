import pytest
import torch

from dyninf.backbones import cifar_resnet
from dyninf.latency import measure_latency, measure_training_step


def test_latency_and_training_step_timings_are_positive_and_train_the_model():
    # Not a performance claim (those live in the notebooks and benchmarks): the helpers run the
    # work they time, leave eval/train modes as documented and return seconds.
    net = cifar_resnet(8)
    assert 0 < measure_latency(net, 2, min_run_time=0.05) < 10
    assert not net.training
    before = net.stem[0].weight.clone()
    seconds = measure_training_step(net, torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]),
                                    min_run_time=0.05)
    assert 0 < seconds < 10 and net.training
    assert not torch.equal(before, net.stem[0].weight)


def test_latency_times_the_given_images_and_checks_their_count():
    class Recorder(torch.nn.Module):
        def forward(self, images, mode=None):
            self.seen = images
            return images.sum()

    recorder, images = Recorder(), torch.randn(3, 3, 32, 32)
    measure_latency(recorder, 3, images=images, min_run_time=0.01)
    assert torch.equal(recorder.seen, images)
    with pytest.raises(ValueError, match="a batch of 2 images"):
        measure_latency(recorder, 2, images=images)
