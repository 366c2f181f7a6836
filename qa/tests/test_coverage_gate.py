from qa.coverage.__main__ import main, package_totals


def _report(covered, statements, cb, nb):
    return {
        "files": {
            "packages/kd-train/src/kd_train/x.py": {
                "summary": {
                    "covered_lines": covered,
                    "num_statements": statements,
                    "covered_branches": cb,
                    "num_branches": nb,
                }
            }
        }
    }


def test_package_totals_are_percentages():
    assert package_totals(_report(9, 10, 1, 4)) == {"kd_train": (90.0, 25.0)}


def test_a_package_below_its_floor_fails(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(__import__("json").dumps(_report(1, 10, 0, 4)))
    assert main(["check", str(path)]) == 1
