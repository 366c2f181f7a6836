import pytest
from kd_train.errors import KDTrainError
from kd_train.trainer.distributed import (
    DistContext,
    from_environ,
    replica_digests,
    sum_across,
    sync_grads,
    wrap,
)


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


def test_one_process_trains_the_model_unwrapped_whatever_the_strategy():
    import torch

    model = torch.nn.Linear(2, 2)
    assert wrap(model, DistContext(), "fsdp") is model
    assert wrap(model, DistContext(), "ddp") is model


def test_fsdp_refuses_a_model_without_decoder_layers_before_any_collective():
    import torch

    with pytest.raises(KDTrainError, match=r"no decoder layer to shard in Linear.*strategy 'ddp'"):
        wrap(torch.nn.Linear(2, 2), DistContext(rank=0, world_size=2), "fsdp")


def test_gradients_of_a_plain_module_sync_on_every_micro_batch():
    import contextlib

    import torch

    assert isinstance(sync_grads(torch.nn.Linear(2, 2), now=False), contextlib.nullcontext)
