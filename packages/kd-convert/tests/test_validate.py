import re

import pytest
import torch
from kd_convert.errors import ValidationError
from kd_convert.spec import ExportSpec
from kd_convert.stateful import DecodeWrapper, PrefillWrapper, cache_layout
from kd_convert.validate import (
    MAX_LISTED,
    capture,
    dynamic_shapes,
    example_inputs,
    int32_problems,
    unsupported_op_problems,
    validate,
    validate_generation,
)
from kd_convert.wrapper import ExportWrapper, additive_causal_mask, load_student
from torch import nn

SPEC = ExportSpec("exported", (8, 16))


@pytest.fixture(scope="module")
def student(tiny_llama_dir):
    return load_student(tiny_llama_dir)


class Int64MaskWrapper(ExportWrapper):
    """A wrapper that widens the attention mask to int64 before building the mask."""

    def forward(self, input_ids, attention_mask):
        hidden = self.decoder.embed_tokens(input_ids)
        mask = additive_causal_mask(attention_mask.long(), hidden.dtype)
        positions = torch.arange(input_ids.shape[1], dtype=torch.int32)
        rotary = self.decoder.rotary_emb(hidden, positions[None, :])
        for layer in self.decoder.layers:
            hidden = layer(hidden, attention_mask=mask, position_embeddings=rotary)
        return self.lm_head(self.decoder.norm(hidden))


class Unmodified(nn.Module):
    """The transformers model called the usual way: its own mask creation, int64 positions."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def test_the_export_wrapper_has_no_int64_tensors(student):
    assert int32_problems(capture(ExportWrapper(student), SPEC)) == []


def test_int64_attention_mask_is_rejected_naming_the_op(student):
    with pytest.raises(ValidationError) as info:
        validate(Int64MaskWrapper(student), SPEC)
    message = str(info.value)
    assert "aten.to.dtype produces an int64 tensor" in message
    assert "test_validate.py" in message  # the line that widened the mask


def test_int64_model_inputs_are_rejected():
    class Echo(nn.Module):
        def forward(self, input_ids, attention_mask):
            return (input_ids + attention_mask).float()

    inputs = (torch.ones(1, 8, dtype=torch.int64), torch.ones(1, 8, dtype=torch.int64))
    problems = int32_problems(capture(Echo(), SPEC, inputs))
    assert problems[0].startswith("input 'input_ids' is int64")


def test_the_unmodified_model_is_rejected_for_coreml_naming_the_mask_ops(student):
    with pytest.raises(ValidationError) as info:
        validate(Unmodified(student), ExportSpec("coreml", (8,)))
    message = str(info.value)
    assert "aten.arange.default produces an int64 tensor" in message
    assert "more" in message  # the rest is summarised, not dumped


def test_coreml_op_check_names_ops_coremltools_lacks(student):
    from kd_convert.validate import unsupported_op_problems

    spec = ExportSpec("coreml", (8,))
    program = capture(Unmodified(student), spec).run_decompositions({})
    names = " ".join(unsupported_op_problems(program, spec))
    assert "aten.new_ones.default has no Core ML converter" in names
    assert "aten.__and__.Tensor has no Core ML converter" in names


def test_branching_on_tensor_values_is_dynamic_control_flow():
    class Branchy(nn.Module):
        def forward(self, input_ids, attention_mask):
            if attention_mask.sum() > 3:
                return input_ids.float()
            return input_ids.float() * 2

    with pytest.raises(ValidationError, match="dynamic control flow") as info:
        validate(Branchy(), SPEC)
    # torch's "Caused by: (file:line in function)" is carried over, not the fallback text
    assert re.search(r"\(\S+\.py:\d+ in \w+\); compute both branches", str(info.value))


def test_branching_on_the_sequence_length_is_dynamic_control_flow():
    class LengthBranch(nn.Module):
        def forward(self, input_ids, attention_mask):
            if input_ids.shape[1] > 12:
                return input_ids.float()
            return input_ids.float() * 2

    with pytest.raises(ValidationError, match=r"dynamic control flow.*lengths \(8, 16\)"):
        validate(LengthBranch(), SPEC)


def test_other_export_failures_propagate_unchanged():
    class Broken(nn.Module):
        def forward(self, input_ids, attention_mask):
            raise KeyError("not an export problem")

    with pytest.raises(KeyError):
        capture(Broken(), SPEC)


def test_example_ids_alternate_one_and_two_and_the_mask_is_all_ones():
    ids, mask = example_inputs(ExportSpec("onnx", (5, 9), batch_size=2))
    assert ids.tolist() == [[1, 2, 1, 2, 1]] * 2
    assert mask.tolist() == [[1] * 5] * 2
    assert (ids.dtype, mask.dtype) == (torch.int32, torch.int32)


def test_example_inputs_take_an_explicit_length():
    ids, mask = example_inputs(ExportSpec("onnx", (5, 9)), length=9)
    assert ids.shape == mask.shape == (1, 9)


def test_one_enumerated_length_has_no_dynamic_shapes():
    assert dynamic_shapes(ExportSpec("onnx", (8,))) is None


def test_several_lengths_make_the_sequence_axis_dynamic_between_them():
    shapes = dynamic_shapes(ExportSpec("onnx", (16, 8, 32)))
    assert shapes is not None
    assert sorted(shapes) == ["attention_mask", "input_ids"]
    for axes in shapes.values():
        assert list(axes) == [1]
        assert (axes[1].min, axes[1].max) == (8, 32)


class ManyInt64Ops(nn.Module):
    """Eight int64 ops, each on its own line: more problems than one message lists."""

    def forward(self, input_ids, attention_mask):
        a = attention_mask.long()
        b = a.cumsum(-1)
        c = torch.arange(input_ids.shape[1])
        d = b + c
        e = d * 3
        f = e - 1
        g = f.abs()
        h = g.neg()
        return h.float()


def test_a_long_list_of_problems_is_cut_at_max_listed_and_counts_the_rest():
    spec = ExportSpec("exported", (8,))
    problems = list(dict.fromkeys(int32_problems(capture(ManyInt64Ops(), spec))))
    assert len(problems) > MAX_LISTED
    with pytest.raises(ValidationError) as info:
        validate(ManyInt64Ops(), spec)
    message = str(info.value)
    assert message.endswith(f"; and {len(problems) - MAX_LISTED} more")
    assert message.count("produces an int64 tensor") == MAX_LISTED


def test_a_short_list_of_problems_is_given_in_full_without_a_count():
    class TwoInt64Ops(nn.Module):
        def forward(self, input_ids, attention_mask):
            return (attention_mask.long() * 3).float()

    with pytest.raises(ValidationError) as info:
        validate(TwoInt64Ops(), ExportSpec("exported", (8,)))
    message = str(info.value)
    assert message.count("produces an int64 tensor") == 2
    assert "more" not in message


def test_an_int64_buffer_is_not_reported_as_a_model_input():
    class Offsets(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("offsets", torch.arange(8))

        def forward(self, input_ids, attention_mask):
            return (input_ids + self.offsets.int()).float()

    assert int32_problems(capture(Offsets(), ExportSpec("exported", (8,)))) == []


def test_a_clean_module_passes_and_its_program_is_returned():
    class Clean(nn.Module):
        def forward(self, input_ids, attention_mask):
            return (input_ids * attention_mask).float()

    program = validate(Clean(), ExportSpec("exported", (8,)))
    assert list(program.graph_signature.user_inputs) == ["input_ids", "attention_mask"]


def test_coreml_op_check_judges_only_the_graph_ops():
    class Masked(nn.Module):
        def forward(self, input_ids, attention_mask):
            return (input_ids * attention_mask).float()

    spec = ExportSpec("coreml", (8,))
    program = capture(Masked(), spec).run_decompositions({})
    assert unsupported_op_problems(program, spec) == []


def test_a_graph_node_without_a_stack_trace_is_named_by_its_node():
    from kd_convert.validate import _where

    graph = torch.fx.Graph()
    node = graph.placeholder("input_ids")
    assert _where(node) == "graph node input_ids"


def test_on_macos_the_core_ml_runtime_notice_is_not_dropped(monkeypatch):
    import kd_convert.validate as validate

    pytest.importorskip("coremltools")
    dropped = []
    real = validate.drop_log_messages

    def record(logger, pattern):
        dropped.append(pattern)
        return real(logger, pattern)

    monkeypatch.setattr(validate, "drop_log_messages", record)
    monkeypatch.setattr(validate.sys, "platform", "darwin")
    validate.import_coremltools()
    assert dropped == [validate.COREML_TORCH_NOTICE]


def test_off_macos_the_core_ml_runtime_notice_is_dropped_too(monkeypatch):
    import kd_convert.validate as validate

    pytest.importorskip("coremltools")
    dropped = []
    real = validate.drop_log_messages

    def record(logger, pattern):
        dropped.append(pattern)
        return real(logger, pattern)

    monkeypatch.setattr(validate, "drop_log_messages", record)
    monkeypatch.setattr(validate.sys, "platform", "linux")
    validate.import_coremltools()
    assert dropped == [validate.COREML_TORCH_NOTICE, validate.COREML_RUNTIME_NOTICE]


@pytest.mark.parametrize(
    "spec",
    [ExportSpec("onnx", (8, 16)), ExportSpec("coreml", (8,))],
    ids=["onnx", "coreml"],
)
def test_the_export_wrapper_passes_every_check_of_the_target_format(student, spec):
    if spec.format == "coreml":
        pytest.importorskip("coremltools")
    program = validate(ExportWrapper(student), spec)
    ops = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    # ONNX judges the graph as captured (shape asserts and sym_size included); Core ML judges
    # the decomposed graph ct.convert sees, where the aten.to casts became _to_copy
    assert ("aten.to.dtype" in ops) == (spec.format == "onnx")
    assert ("aten._to_copy.default" in ops) == (spec.format == "coreml")


class RunningMax(nn.Module):
    """Carries the mask forward with ``cummax``, an op torch.onnx has no translation for."""

    def forward(self, input_ids, attention_mask):
        seen = attention_mask.cummax(dim=1).values
        return (input_ids * seen).float()


def test_onnx_op_check_names_the_one_op_torch_onnx_cannot_translate():
    spec = ExportSpec("onnx", (8,))
    problems = unsupported_op_problems(capture(RunningMax(), spec), spec)
    assert len(problems) == 1  # the cummax, not its getitem, mul or the cast
    assert problems[0].startswith(
        "op aten.cummax.default has no ONNX (opset 18) translation in torch.onnx"
    )
    assert "test_validate.py" in problems[0]  # the line that called cummax


def test_onnx_rejection_is_what_torch_onnx_itself_fails_on():
    spec = ExportSpec("onnx", (8,))
    program = capture(RunningMax(), spec)
    missing = r"No ONNX function found for <OpOverload\(op='aten\.cummax'"
    with pytest.raises(torch.onnx.OnnxExporterError, match=missing):
        torch.onnx.export(program, dynamo=True, opset_version=spec.opset, verbose=False)


@pytest.mark.parametrize("fmt", ["exported", "torchscript"])
def test_formats_without_an_op_registry_judge_no_ops(fmt):
    spec = ExportSpec(fmt, (8,))
    assert unsupported_op_problems(capture(RunningMax(), spec), spec) == []


class LastRealToken(nn.Module):
    """The last real position of each row from ``max(dim=1)``: a tuple read with getitem."""

    def forward(self, input_ids, attention_mask):
        positions = torch.arange(input_ids.shape[1], dtype=torch.int32) * attention_mask
        last = positions.max(dim=1).indices
        return (input_ids + last[:, None].int()).float()


def test_an_int64_index_read_from_a_tuple_result_is_named_getitem():
    with pytest.raises(ValidationError) as info:
        validate(LastRealToken(), ExportSpec("exported", (8,)))
    assert "op getitem produces an int64 tensor" in str(info.value)


@pytest.mark.parametrize("fmt", ["onnx", "coreml"])
def test_python_level_getitem_nodes_pass_the_op_checks(fmt):
    if fmt == "coreml":
        pytest.importorskip("coremltools")
    spec = ExportSpec(fmt, (8,))
    program = capture(LastRealToken(), spec)
    if fmt == "coreml":
        program = program.run_decompositions({})
    assert "getitem" in {getattr(n.target, "__name__", "") for n in program.graph.nodes}
    assert unsupported_op_problems(program, spec) == []


def test_generation_graphs_are_traced_at_a_prompt_and_the_step_after_it(student):
    spec = ExportSpec("onnx", (8,), task="generation")
    layout = cache_layout(student, max_length=32)
    prefill, decode = validate_generation(
        PrefillWrapper(student), DecodeWrapper(student), spec, layout
    )

    def shapes(program):
        nodes = {node.name: node for node in program.graph.nodes}
        names = program.graph_signature.user_inputs
        return [tuple(nodes[name].meta["val"].shape) for name in names]

    ids, mask, positions = shapes(prefill)
    assert ids == mask == positions
    assert ids[0] == 1
    assert isinstance(ids[1], torch.SymInt)  # the prompt axis is dynamic
    ids, mask, positions, *past = shapes(decode)
    assert ids == positions == (1, 1)
    assert len(past) == 2 * layout.layers
    for shape in past:
        assert shape[:2] == (1, layout.kv_heads)
        assert shape[3] == layout.head_dim
        assert isinstance(shape[2], torch.SymInt)  # the cache axis is dynamic
    assert str(mask[1]) == f"{past[0][2]} + 1"  # the mask covers the cache and the new token
    step_ids, step_mask, step_positions, *step_past = decode.example_inputs[0]
    n = spec.seq_lengths[0]
    assert step_positions.tolist() == [[n]]  # the token right after an n-token prompt
    assert step_mask.tolist() == [[1] * (n + 1)]
    assert step_ids.tolist() == [[1]]
    assert [tuple(t.shape) for t in step_past] == [(1, layout.kv_heads, n, layout.head_dim)] * 4
