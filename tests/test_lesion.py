import pandas as pd
import pytest
import torch

from dyninf.backbones import cifar_resnet
from dyninf.data import synthetic_dataset
from dyninf.lesion import lesion_accuracy, lesion_decisions, random_lesions, single_block_lesions
from dyninf.train import predict


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    return cifar_resnet(20).eval(), synthetic_dataset(2, 4)


def test_lesion_decisions_by_hand():
    assert lesion_decisions(2, 4, [1, 3]).tolist() == [[1, 0, 1, 0], [1, 0, 1, 0]]
    assert lesion_decisions(1, 3, []).tolist() == [[1, 1, 1]]


def test_lesion_accuracy_equals_running_without_that_block(setup):
    net, data = setup
    deleted = [2, 5]
    decisions = lesion_decisions(len(data.test_images), net.num_blocks, deleted)
    expected = (predict(net, data.test_images, decisions=decisions).argmax(1) == data.test_labels).float().mean()
    assert lesion_accuracy(net, data.test_images, data.test_labels, deleted) == pytest.approx(expected.item())


def test_single_block_lesions_cover_every_block(setup):
    net, data = setup
    table = single_block_lesions(net, data.test_images, data.test_labels)
    assert table.block.tolist() == list(range(9))
    assert table.downsampling.tolist() == [k in (3, 6) for k in range(9)]
    assert table.accuracy.between(0, 1).all()


def test_random_lesions_delete_k_distinct_candidates(setup):
    net, data = setup
    candidates = [0, 1, 2, 4]
    table = random_lesions(net, data.test_images, data.test_labels, candidates, draws=3, seed=1)
    assert isinstance(table, pd.DataFrame)
    assert table.groupby("k").size().tolist() == [1, 3, 3, 3, 1]
    for k, deleted in zip(table.k, table.deleted):
        assert len(deleted) == len(set(deleted)) == k and set(deleted) <= set(candidates)
    again = random_lesions(net, data.test_images, data.test_labels, candidates, draws=3, seed=1)
    assert again.deleted.tolist() == table.deleted.tolist()
