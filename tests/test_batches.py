import pytest
import torch

from dyninf.data.batches import CIFAR10_MEAN, CIFAR10_STD, Batches, crop_and_flip, normalize


def test_normalize_by_hand():
    images = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    images[0, 1] = 0
    out = normalize(images)
    assert out.dtype == torch.float32
    assert out[0, 0, 0, 0].item() == pytest.approx((1 - CIFAR10_MEAN[0]) / CIFAR10_STD[0])
    assert out[0, 1, 1, 1].item() == pytest.approx(-CIFAR10_MEAN[1] / CIFAR10_STD[1])


def test_normalize_rejects_wrong_input():
    with pytest.raises(ValueError, match=r"uint8 images of shape \(N, 3, H, W\)"):
        normalize(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="uint8"):
        normalize(torch.zeros(2, 1, 8, 8, dtype=torch.uint8))


def test_crop_and_flip_by_hand():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).view(2, 3, 6, 6).to(torch.uint8)
    centred = crop_and_flip(images, torch.tensor([[4, 4], [4, 4]]), torch.tensor([False, False]))
    assert torch.equal(centred, images)
    # offset (0, 0): the image moves 4 pixels down and right, zeros come in at the top left
    shifted = crop_and_flip(images, torch.tensor([[0, 0], [0, 0]]), torch.tensor([False, False]))
    assert torch.equal(shifted[:, :, 4:, 4:], images[:, :, :2, :2])
    assert (shifted[:, :, :4] == 0).all() and (shifted[:, :, :, :4] == 0).all()
    # offset (8, 2): up by 4, right by 2
    moved = crop_and_flip(images, torch.tensor([[8, 2], [8, 2]]), torch.tensor([False, False]))
    assert torch.equal(moved[:, :, :2, 2:], images[:, :, 4:, :4])
    flipped = crop_and_flip(images, torch.tensor([[4, 4], [4, 4]]), torch.tensor([True, False]))
    assert torch.equal(flipped[0], images[0].flip(2)) and torch.equal(flipped[1], images[1])


def _batches(train, seed=0, batch_size=4):
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(123))
    return Batches(images, torch.arange(10), batch_size, train=train, seed=seed, channels_last=False)


def test_training_batches_shuffle_augment_and_are_seeded():
    batches = _batches(train=True)
    assert len(batches) == 2  # 10 images, batch 4, last incomplete batch dropped
    epoch0 = list(batches.epoch(0))
    again = list(_batches(train=True).epoch(0))
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(epoch0, again))
    labels0 = torch.cat([labels for _, labels in epoch0])
    labels1 = torch.cat([labels for _, labels in batches.epoch(1)])
    assert len(set(labels0.tolist())) == 8 and not torch.equal(labels0, labels1)
    images, labels = epoch0[0]
    assert images.shape == (4, 3, 32, 32) and images.dtype == torch.float32
    assert not torch.allclose(images, normalize(batches.images[labels]))  # augmented


def test_test_batches_keep_order_and_every_image():
    batches = _batches(train=False)
    assert len(batches) == 3
    out = list(batches)
    assert torch.equal(torch.cat([labels for _, labels in out]), torch.arange(10))
    assert torch.allclose(torch.cat([images for images, _ in out]), normalize(batches.images))


def test_batches_reject_mismatched_inputs():
    with pytest.raises(ValueError, match="10 images but 9 labels"):
        Batches(torch.zeros(10, 3, 32, 32, dtype=torch.uint8), torch.zeros(9), 4, train=True)


def test_the_shards_of_a_batch_are_its_equal_parts_in_order_and_an_uneven_split_is_an_error():
    images = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8)
    labels = torch.arange(40) % 10
    whole = list(Batches(images, labels, 8, train=True, seed=1).epoch(2))
    parts = [list(Batches(images, labels, 8, train=True, seed=1, shard=(k, 2)).epoch(2)) for k in range(2)]
    for (batch, batch_labels), first, second in zip(whole, *parts):
        torch.testing.assert_close(torch.cat([first[0], second[0]]), batch)   # the same augmentation too
        assert torch.equal(torch.cat([first[1], second[1]]), batch_labels)
    with pytest.raises(ValueError, match="a batch of 8 cannot be split into 3 equal shards"):
        Batches(images, labels, 8, train=True, shard=(0, 3))
