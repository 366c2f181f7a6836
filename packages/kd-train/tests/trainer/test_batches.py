import pytest
from kd_train.errors import KDTrainError
from kd_train.trainer.batches import batches_per_epoch, epoch_order, micro_batch


def test_epoch_order_depends_only_on_seed_and_epoch():
    assert epoch_order(50, 3, 1) == epoch_order(50, 3, 1)
    assert epoch_order(50, 3, 1) != epoch_order(50, 3, 2)
    assert epoch_order(50, 3, 1) != epoch_order(50, 4, 1)


def test_rank_shards_do_not_overlap_and_cover_the_global_batch():
    order = epoch_order(24, 0, 0)
    for index in range(batches_per_epoch(24, 3, 2)):
        shards = [micro_batch(order, index, 3, rank, 2) for rank in range(2)]
        assert not set(shards[0]) & set(shards[1])
        assert micro_batch(order, index, 6, 0, 1) == shards[0] + shards[1]


def test_dataset_smaller_than_one_global_batch_is_an_error():
    with pytest.raises(KDTrainError, match="fewer than one global micro-batch"):
        batches_per_epoch(3, 2, 2)
