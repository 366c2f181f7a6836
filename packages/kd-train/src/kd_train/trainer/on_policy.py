"""On-policy and sequence-level distillation: completions sampled during the run.

With ``train.on_policy`` (:class:`~kd_train.trainer.train_config.OnPolicyConfig`) every
optimiser step has a *source* for its completions, drawn by :func:`step_source`:

``student``
    (a fraction ``lmbda`` of the steps) the current student samples a completion for each
    prompt of the step's batches: ``transformers`` ``generate`` with its KV cache, under
    ``torch.no_grad`` and in eval mode, then back to train mode.
``teacher``
    (the other steps, with ``seq_kd``) the teacher samples it (sequence-level KD).
``data``
    (the other steps, without ``seq_kd``) the dataset's own completion (off-policy).

A sampled completion replaces the record's: the new example is ``prompt + completion``,
where the completion ends at the first ``eos`` (kept, and learned) or after
``max_new_tokens``. Its labels are the completion tokens only: the prompt and everything
after the ``eos`` are ``kd_train.data.IGNORE_INDEX``, so the loss covers exactly the
tokens that were sampled. The teacher then scores the new batch like any other (``hf`` and
``http`` teachers can; a cache or the records cannot, which the config refuses).

**Randomness.** The source of step ``s`` is a pure function of ``(train.seed, s)``, so every
rank agrees on it (FSDP needs that: gathering the full weights for generation is a
collective). Sampling draws from the :class:`Sampler`'s own generator, seeded from
``(train.seed, rank)`` and independent of the global one; its state is saved in every
checkpoint (``TrainState.sampler_rng``, :mod:`kd_train.trainer.checkpoint`; one entry per
rank), so a resumed run samples exactly what the uninterrupted one did.

>>> from kd_train.trainer.on_policy import step_source
>>> from kd_train.trainer.train_config import OnPolicyConfig
>>> cfg = OnPolicyConfig(lmbda=0.5)
>>> sources = [step_source(cfg, seed=0, step=s) for s in range(1000)]
>>> 400 < sources.count("student") < 600, set(sources) == {"student", "data"}
(True, True)
>>> step_source(OnPolicyConfig(lmbda=0.0, seq_kd=True), seed=0, step=3)
'teacher'
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from kd_train.data import IGNORE_INDEX, Batch, Example, collate
from kd_train.data.schema import SPAN_KINDS
from kd_train.errors import KDTrainError
from kd_train.trainer.train_config import OnPolicyConfig

Source = Literal["student", "teacher", "data"]

__all__ = [
    "Rollout",
    "Sampler",
    "Source",
    "completion_examples",
    "eos_token_ids",
    "prompts",
    "step_source",
]


def step_source(cfg: OnPolicyConfig, seed: int, step: int) -> Source:
    """Where the completions of optimiser step ``step`` (0-based) come from.

    A uniform draw ``u`` from a generator seeded with ``(seed, step)``: ``"student"`` when
    ``u < lmbda``, else ``"teacher"`` with ``seq_kd``, else ``"data"``. TRL's GKD trainer
    makes the same choice with ``random.random() <= lmbda``.
    """
    generator = torch.Generator().manual_seed(seed * 1_000_033 + step + 7_919)
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    if u < cfg.lmbda:
        return "student"
    return "teacher" if cfg.seq_kd else "data"


def prompts(batch: Batch, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Left-pad the prompts of ``batch``: ``(input_ids [B, P], attention_mask [B, P], lengths)``.

    A row's prompt is everything before its first label (``bos`` and the prompt tokens).

    Raises:
        kd_train.errors.KDTrainError: a row has no label, so no prompt/completion boundary.
    """
    lengths: list[int] = []
    for row in range(batch.labels.shape[0]):
        labelled = (batch.labels[row] != IGNORE_INDEX).nonzero()
        if labelled.numel() == 0:
            raise KDTrainError(
                f"on-policy: record {batch.record_ids[row]!r} has no completion token, so "
                "where its prompt ends is unknown"
            )
        lengths.append(int(labelled[0]))
    width = max(lengths)
    ids = batch.input_ids.new_full((len(lengths), width), pad_id)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, width - n :] = batch.input_ids[row, :n]
        mask[row, width - n :] = 1
    return ids, mask, lengths


def completion_examples(
    batch: Batch,
    sequences: torch.Tensor,
    prompt_lengths: list[int],
    eos_ids: set[int],
) -> list[Example]:
    """Rebuild examples from ``generate``'s ``sequences`` ``[B, P + N]`` (left-padded prompts).

    Each example is the row's prompt followed by its sampled tokens up to and including the
    first ``eos`` (all ``N`` when there is none); its labels are the sampled tokens, with
    the prompt at ``IGNORE_INDEX``. Span masks are all false: a sampled
    completion carries no labelled spans.
    """
    prompt_width = max(prompt_lengths)
    examples = []
    for row, n in enumerate(prompt_lengths):
        completion = sequences[row, prompt_width:].cpu()
        is_eos = torch.tensor([int(t) in eos_ids for t in completion.tolist()], dtype=torch.bool)
        end = int(is_eos.nonzero()[0]) + 1 if bool(is_eos.any()) else completion.numel()
        completion = completion[:end]
        prompt = batch.input_ids[row, :n].cpu()
        input_ids = torch.cat([prompt, completion])
        labels = input_ids.clone()
        labels[:n] = IGNORE_INDEX
        spans = {kind: torch.zeros(input_ids.numel(), dtype=torch.bool) for kind in SPAN_KINDS}
        examples.append(Example(batch.record_ids[row], input_ids, labels, spans))
    return examples


@dataclass(frozen=True)
class Rollout:
    """The batch a step trains on and where its completions came from.

    Attributes:
        batch: the batch (sampled completions, or the dataset's).
        source: ``"student"``, ``"teacher"`` or ``"data"``.
        generated: completion tokens sampled in this batch (0 for ``"data"``).
        rows: examples sampled (0 for ``"data"``).
    """

    batch: Batch
    source: Source
    generated: int = 0
    rows: int = 0


class Sampler:
    """Samples completions from a model with its own, checkpointed random generator.

    Args:
        cfg (kd_train.trainer.train_config.OnPolicyConfig): the ``train.on_policy``
            settings.
        seed: ``train.seed``.
        rank: this process's rank (each rank samples from its own stream).
        pad_id: the tokenizer's pad id.
        eos_ids: the token ids that end a completion.
        max_length: ``data.max_length``; prompt + completion never exceed it.
        device: the device generation runs on.
    """

    def __init__(
        self,
        cfg: OnPolicyConfig,
        *,
        seed: int,
        rank: int,
        pad_id: int,
        eos_ids: set[int],
        max_length: int,
        device: torch.device,
    ) -> None:
        self.cfg = cfg
        self.rank = rank
        self.pad_id = pad_id
        self.eos_ids = eos_ids
        self.max_length = max_length
        self.device = device
        generator = torch.Generator().manual_seed(seed * 1_000_003 + 104_729 * (rank + 1))
        self._cpu = generator.get_state()
        self._cuda: torch.Tensor | None = None
        if device.type == "cuda":  # pragma: no cover - CPU-only CI
            cuda = torch.Generator(device).manual_seed(seed * 1_000_003 + 104_729 * (rank + 1))
            self._cuda = cuda.get_state()

    # -- the generator's state ----------------------------------------------------------

    def state(self) -> str:
        """This rank's generator state as text (what the checkpoint stores)."""
        parts = [f"cpu:{base64.b64encode(self._cpu.numpy().tobytes()).decode()}"]
        if self._cuda is not None:  # pragma: no cover - CPU-only CI
            parts.append(f"cuda:{base64.b64encode(self._cuda.numpy().tobytes()).decode()}")
        return ";".join(parts)

    def load_state(self, text: str) -> None:
        """Restore a state :meth:`state` returned.

        Raises:
            kd_train.errors.KDTrainError: the text is not such a state.
        """
        try:
            parts = dict(part.split(":", 1) for part in text.split(";"))
            cpu = torch.frombuffer(bytearray(base64.b64decode(parts["cpu"])), dtype=torch.uint8)
            torch.Generator().set_state(cpu)  # refuses a state of the wrong size
        except (ValueError, KeyError, RuntimeError) as exc:
            raise KDTrainError(
                f"the checkpoint's on-policy sampler state is not valid ({exc})"
            ) from exc
        self._cpu = cpu.clone()
        if self._cuda is not None and "cuda" in parts:  # pragma: no cover - CPU-only CI
            self._cuda = torch.frombuffer(
                bytearray(base64.b64decode(parts["cuda"])), dtype=torch.uint8
            ).clone()

    @contextlib.contextmanager
    def _own_generator(self) -> Iterator[None]:
        """Run the body with the global generators set to this sampler's, then put them back."""
        devices = [self.device] if self._cuda is not None else []
        with torch.random.fork_rng(devices=devices, device_type=self.device.type):
            torch.set_rng_state(self._cpu)
            if self._cuda is not None:  # pragma: no cover - CPU-only CI
                torch.cuda.set_rng_state(self._cuda, self.device)
            yield
            self._cpu = torch.get_rng_state()
            if self._cuda is not None:  # pragma: no cover - CPU-only CI
                self._cuda = torch.cuda.get_rng_state(self.device)

    # -- sampling -----------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, model: Any, batch: Batch, source: Source) -> Rollout:
        """Replace the completions of ``batch`` by ``model``'s samples (``source`` names it).

        ``model`` is a ``transformers`` causal LM; it is put in eval mode to sample and its
        previous mode is restored.

        Raises:
            kd_train.errors.KDTrainError: a prompt leaves no room for a completion within
                ``data.max_length``.
        """
        ids, mask, lengths = prompts(batch, self.pad_id)
        room = self.max_length - ids.shape[1]
        if room < 1:
            raise KDTrainError(
                f"on-policy: a prompt of {ids.shape[1]} tokens leaves no room for a "
                f"completion within data.max_length={self.max_length}; raise data.max_length"
            )
        was_training = model.training
        model.eval()
        try:
            with self._own_generator():
                sequences = model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    do_sample=True,
                    temperature=self.cfg.temperature,
                    top_p=self.cfg.top_p,
                    top_k=self.cfg.top_k,
                    max_new_tokens=min(self.cfg.max_new_tokens, room),
                    pad_token_id=self.pad_id,
                    eos_token_id=sorted(self.eos_ids),
                    use_cache=True,
                )
        finally:
            model.train(was_training)
        examples = completion_examples(batch, sequences, lengths, self.eos_ids)
        generated = sum(
            int(e.input_ids.numel()) - n for e, n in zip(examples, lengths, strict=True)
        )
        return Rollout(collate(examples, self.pad_id), source, generated, len(examples))


def eos_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a completion: the model's generation config's, else the tokenizer's.

    Raises:
        kd_train.errors.KDTrainError: neither names an ``eos`` token.
    """
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = tokenizer.eos_token_id
    if configured is None:
        raise KDTrainError(
            "on-policy: the student has no eos token (neither its generation config nor its "
            "tokenizer names one), so a sampled completion could not end"
        )
    return {int(i) for i in configured} if isinstance(configured, list) else {int(configured)}
