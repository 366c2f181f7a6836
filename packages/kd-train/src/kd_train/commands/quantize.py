"""``kd-train quantize``: post-training quantization of a float student, for export and eval.

Writes ``OUT_DIR``: a byte-for-byte copy of the float student plus ``quantization.json``
with the scheme applied and no training (``origin: ptq``;
:func:`kd_train.trainer.qat.post_training_quantize`). ``kd-convert export`` writes its
integer weights and scales as it does a QAT student's, and ``kd-eval`` loads it
fake-quantized; ``kd-eval quantization`` compares it with the fp32 and QAT students.
A student that already carries ``quantization.json`` is refused.

Example::

    kd-train quantize runs/fp32/student runs/ptq-int4 --scheme int4 --group-size 32
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from kd_train.cliutil import output_dir

#: The values of ``--scheme`` and ``--group-size``: those of
#: :data:`kd_train.trainer.train_config.QAT_SCHEMES` and ``QAT_GROUP_SIZES`` (spelled out so
#: that ``--help`` does not import torch; a test keeps them equal).
SCHEME_NAMES = ("int8", "int4")
GROUP_SIZES = (32, 64)


def register(subparsers: Any) -> None:
    """Add the ``quantize`` subcommand."""
    parser = subparsers.add_parser(
        "quantize",
        help="post-training quantization: a copy of a float student with quantization.json",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    parser.add_argument("student_dir", type=Path, metavar="STUDENT_DIR", help="a float student")
    parser.add_argument(
        "out_dir", type=output_dir, metavar="OUT_DIR", help="where the quantized copy goes"
    )
    parser.add_argument(
        "--scheme",
        choices=SCHEME_NAMES,
        required=True,
        help="int8: per-channel int8 weights + per-token int8 activations; int4: grouped "
        "int4 weights",
    )
    parser.add_argument(
        "--group-size",
        type=int,
        choices=GROUP_SIZES,
        default=None,
        help="int4 only: input columns per weight scale (default 32)",
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="no transformers loading bar on stderr"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Quantize, and print a JSON summary of what was written."""
    from kd_train.trainer.qat import post_training_quantize, read_quantization
    from kd_train.trainer.train_config import QATConfig
    from kd_train.typed_config import InvalidConfigError, validate

    section = {"scheme": args.scheme}
    if args.group_size is not None:
        section["group_size"] = args.group_size
    config: QATConfig = validate(QATConfig, section, InvalidConfigError, "flags")
    out = post_training_quantize(args.student_dir, args.out_dir, config)
    record = read_quantization(out)
    summary = {
        "out": str(out),
        "scheme": config.scheme,
        "group_size": config.weight_group_size,
        "layers": 0 if record is None else len(record.layers),
        "origin": "ptq",
    }
    print(json.dumps(summary))
    return 0
