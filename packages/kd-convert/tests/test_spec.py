import pytest
from kd_convert.errors import ExportConfigError, ValidationError
from kd_convert.spec import ExportSpec, check_sequence_length


def test_lengths_are_stored_sorted_and_unique():
    assert ExportSpec("onnx", seq_lengths=(128, 64, 128)).seq_lengths == (64, 128)


def test_unknown_format_is_rejected_with_the_choices():
    with pytest.raises(ExportConfigError, match=r"tflite.*torchscript, exported, onnx, coreml"):
        ExportSpec("tflite")  # type: ignore[arg-type]


@pytest.mark.parametrize("lengths", [(), (1,), (64, 0)])
def test_lengths_below_two_are_rejected(lengths):
    with pytest.raises(ExportConfigError, match="seq_lengths"):
        ExportSpec("onnx", seq_lengths=lengths)


def test_int8_quantization_is_only_for_coreml():
    assert ExportSpec("coreml", quantize="int8").quantize == "int8"
    with pytest.raises(ExportConfigError, match="only supported as 'int8' for the coreml"):
        ExportSpec("onnx", quantize="int8")


def test_batch_size_and_old_opsets_are_rejected():
    with pytest.raises(ExportConfigError, match="batch_size"):
        ExportSpec("onnx", batch_size=0)
    with pytest.raises(ExportConfigError, match="opset 17"):
        ExportSpec("onnx", opset=17)


def test_input_shapes_enumerate_batch_and_lengths():
    assert ExportSpec("coreml", (8, 16), batch_size=2).input_shapes() == [[2, 8], [2, 16]]


def test_enumerated_length_passes_the_shape_gate():
    check_sequence_length(64, (64, 128))


def test_length_outside_the_set_names_the_length_to_pad_to():
    with pytest.raises(ValidationError, match=r"sequence length 100 .* pad the input to 128"):
        check_sequence_length(100, (64, 128))


def test_length_above_the_set_says_to_truncate():
    with pytest.raises(ValidationError, match="truncate the input to 128"):
        check_sequence_length(300, (64, 128))


def test_generation_settings_are_checked_up_front():
    with pytest.raises(ExportConfigError, match="unknown export task 'chat'"):
        ExportSpec("onnx", task="chat")
    with pytest.raises(ExportConfigError, match="--for generation exports only"):
        ExportSpec("onnx", max_length=512)
    with pytest.raises(ExportConfigError, match="must exceed the longest prefill length 256"):
        ExportSpec("onnx", task="generation", max_length=256)


def test_torch_export_names_its_flat_cache_inputs():
    from kd_convert.contract import generation_graphs
    from kd_convert.stateful import CacheLayout

    spec = ExportSpec("exported", (8,), task="generation")
    decode = generation_graphs(spec, CacheLayout(1, 2, 8, "float32", 64), 50)["decode"]
    assert [t.name for t in decode.inputs][3:] == ["past_key_values_0", "past_key_values_1"]
