"""iterate_batches: shuffled by a CPU generator, converted to [0, 1], moved to the device."""

import pytest
import torch

from exitwise.data import ArrayDataset, iterate_batches


def dataset(n=10):
    images = torch.arange(n * 3 * 2 * 2, dtype=torch.int64).remainder(256).to(torch.uint8)
    return ArrayDataset(images.view(n, 3, 2, 2), torch.arange(n))


def test_order_sizes_and_values():
    data = dataset()
    batches = list(iterate_batches(data, 4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x, y = batches[0]
    assert x.dtype == torch.float32 and torch.equal(x, data.images[:4].float() / 255)
    assert torch.equal(torch.cat([y for _, y in batches]), data.labels)
    assert [len(y) for _, y in iterate_batches(data, 4, drop_last=True)] == [4, 4]


def test_a_seeded_generator_shuffles_reproducibly_and_the_data_stays_as_is():
    data = dataset()
    before = data.images.clone()
    a = [y for _, y in iterate_batches(data, 3, torch.Generator().manual_seed(0))]
    b = [y for _, y in iterate_batches(data, 3, torch.Generator().manual_seed(0))]
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert sorted(torch.cat(a).tolist()) == list(range(10))
    for x, _ in iterate_batches(data, 3):
        x.zero_()
    assert torch.equal(data.images, before)


def test_batches_go_to_the_device(device):
    data = dataset()
    x, y = next(iterate_batches(data, 4, torch.Generator().manual_seed(1), device=device))
    assert x.device.type == device.type and y.device.type == device.type
    cpu_x, cpu_y = next(iterate_batches(data, 4, torch.Generator().manual_seed(1)))
    assert torch.equal(x.cpu(), cpu_x) and torch.equal(y.cpu(), cpu_y)  # same order everywhere


def test_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        next(iterate_batches(dataset(), 0))
