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


def test_speedup_table_rows_and_ratios():
    from dyninf.dynamic import DynamicNetwork
    from dyninf.deciders import StochasticDepth
    from dyninf.latency import speedup_table

    plain = cifar_resnet(8)
    net = DynamicNetwork(cifar_resnet(8), StochasticDepth(3, 0.5)).eval()
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    asked = []
    table = speedup_table(plain, net, images, [1, 4], lambda batch: asked.append(len(batch)) or 2.0,
                          "SD", min_run_time=0.01)
    assert asked == [1, 4] and list(table["mode"]) == ["SD masked", "SD skipped"] * 2
    assert (table["ideal speed-up"] == 2.0).all()
    assert ((table["speed-up"] - table["plain ms"] / table["ms per batch"]).abs() < 1e-9).all()
    assert ((table["realized / ideal"] - table["speed-up"] / 2.0).abs() < 1e-9).all()
