import pandas as pd
import pytest
import torch

from dyninf.network.backbones import cifar_resnet
from dyninf.data.cifar import synthetic_dataset
from dyninf.network.inference import predict
from dyninf.measure.lesion import (lesion_accuracy, lesion_decisions, random_lesions, random_paths_like,
                           single_block_lesions)


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


def test_random_paths_keep_each_images_count_of_blocks_uniformly():
    kept = torch.tensor([0, 9, 4, 1] * 500)
    paths = random_paths_like(kept, 9, seed=3)
    assert paths.shape == (2000, 9) and torch.equal(paths.sum(1), kept.float())
    # every block equally likely: image 2's 4 of 9 blocks -> each kept 4/9 of the time
    assert torch.allclose(paths[2::4].mean(0), torch.full((9,), 4 / 9), atol=0.08)
    assert torch.equal(paths, random_paths_like(kept, 9, seed=3)) and not torch.equal(paths, random_paths_like(kept, 9, seed=4))
    with pytest.raises(ValueError, match=r"whole numbers of blocks in \[0, 9\]"):
        random_paths_like(torch.tensor([10]), 9)
