import pytest
from kd_train.errors import KDTrainError
from kd_train.trainer.distributed import DistContext, from_environ, replica_digests, sum_across


def test_no_torchrun_variables_means_a_single_main_process():
    ctx = from_environ({})
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.device.type) == (0, 1, True, "cpu")


def test_non_integer_rank_is_an_error_naming_torchrun():
    with pytest.raises(KDTrainError, match="must be integers"):
        from_environ({"RANK": "one"})


def test_rank_outside_world_size_is_an_error():
    with pytest.raises(KDTrainError, match="outside WORLD_SIZE=2"):
        from_environ({"RANK": "2", "WORLD_SIZE": "2"})


def test_single_process_collectives_are_identities():
    import torch

    assert sum_across(2.5, DistContext()) == 2.5
    model = torch.nn.Linear(2, 2)
    assert len(replica_digests(model, DistContext())) == 1
