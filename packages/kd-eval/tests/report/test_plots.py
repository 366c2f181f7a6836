from kd_eval.report.plots import confusion_matrix_png, curve_png, distribution_png

PNG = b"\x89PNG\r\n\x1a\n"


def test_confusion_matrix_is_a_png():
    assert confusion_matrix_png(["a", "b", "c"], [[2, 1, 0], [0, 1, 1], [0, 0, 1]]).startswith(PNG)


def test_distribution_is_a_png():
    assert distribution_png(["a", "b"], {"a": 2, "b": 1}, {"a": 1, "b": 2}).startswith(PNG)


def test_curve_is_a_png():
    curves = {
        "quality": "accuracy",
        "higher_is_better": True,
        "points": [
            {"name": "s", "quality": 0.5, "costs": {"parameters": 10.0}},
            {"name": "l", "quality": 0.8, "costs": {"parameters": 100.0}},
        ],
        "fronts": {"parameters": ["s", "l"]},
    }
    assert curve_png(curves, "parameters").startswith(PNG)
