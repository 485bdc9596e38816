"""Per-rank data loaders and the batch -> (tokens, labels, loss_mask, position_ids) step, plus
the document attention mask of packed samples (``reset_attention_mask``).

A loader yields ``{"text": LongTensor [b, s + 1]}`` (plus ``"label"`` [b, s + 1] when the dataset
has labels), ``b`` = micro batch size, in the order of :class:`DataParallelBatchSampler`, so a
loader rebuilt with the checkpoint's ``consumed_samples`` continues exactly where the saved run
was.
"""

from __future__ import annotations

from typing import Any

import torch

from megatron_lite.data.samplers import DataParallelBatchSampler
from megatron_lite.utils.processes import detach_helper_process


def build_data_loader(
    dataset: Any,
    micro_batch_size: int,
    dp_rank: int,
    dp_size: int,
    consumed_samples: int = 0,
    num_workers: int = 0,
    *,
    loop: bool = False,
    pin_memory: bool | None = None,
) -> torch.utils.data.DataLoader | None:
    """A DataLoader over this data-parallel rank's micro batches, from ``consumed_samples`` on.

    ``dataset`` None gives None (a split with no data). ``loop=True`` keeps going past the end of
    the dataset (training for more samples than one pass, or ``train_epochs`` > 1); see
    :class:`DataParallelBatchSampler`. ``pin_memory`` defaults to "CUDA is available".
    """
    if dataset is None:
        return None
    sampler = DataParallelBatchSampler(
        total_samples=len(dataset),
        consumed_samples=consumed_samples,
        micro_batch_size=micro_batch_size,
        dp_rank=dp_rank,
        dp_size=dp_size,
        loop=loop,
    )
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    # The default collate stacks the per-sample int64 numpy arrays into LongTensors [b, s + 1].
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        worker_init_fn=detach_helper_process if num_workers > 0 else None,
        # Each iterator draws its workers' base seed from this generator, not torch's default
        # one: creating a loader (at start, at a resume, for an evaluation) must not move the
        # dropout stream, or a resumed run's dropout masks would differ from the uninterrupted
        # run's. The batches themselves come from the sampler and draw nothing.
        generator=torch.Generator().manual_seed(0),
    )


def get_batch(
    sample: dict[str, torch.Tensor],
    eod_id: int | None = None,
    eod_mask_loss: bool = False,
    pad_id: int = 0,
    *,
    reset_position_ids: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPT-NeoX ``_get_batch``: (tokens [b, s], labels [b, s], loss_mask [b, s] float, position_ids [b, s]).

    ``tokens = text[:, :-1]`` and ``labels = text[:, 1:]``. With a ``"label"`` entry the labels come
    from it instead, and a label of -100 (any negative) has no loss. Negative ids in ``text``
    (GPT-NeoX pads short samples with -100) have no loss either and are replaced by ``pad_id``
    so the embedding never sees them. ``eod_mask_loss`` (off by default, as GPT-NeoX) also drops
    the loss where the *input* token is ``eod_id``. Positions count from 0 in every row; with
    ``reset_position_ids`` (Megatron-LM's key) they restart at 0 after every input EOD, so each
    document of a packed sample is positioned as if it were alone (the EOD keeps the position
    of the document it ends). The attention mask of that case is :func:`document_attention_mask`.
    """
    text = sample["text"].long()  # [b, s + 1]
    if "label" in sample:
        target = sample["label"].long()  # [b, s + 1]
    else:
        target = text
    label_mask = (target >= 0)[:, 1:]  # [b, s]
    # Masked labels become pad_id: any valid id works, the loss mask zeroes them.
    labels = torch.where(target >= 0, target, pad_id)[:, 1:]  # [b, s]
    tokens = torch.where(text >= 0, text, pad_id)[:, :-1]  # [b, s]
    loss_mask = label_mask.float()  # [b, s]
    if (eod_mask_loss or reset_position_ids) and eod_id is None:
        raise ValueError("eod_mask_loss and reset_position_ids need the tokenizer's eod id")
    if eod_mask_loss:
        loss_mask = loss_mask * (tokens != eod_id).float()
    batch, seq = tokens.shape
    position_ids = torch.arange(seq, device=tokens.device).unsqueeze(0).expand(batch, seq)  # [b, s]
    if reset_position_ids:
        # Index where each token's document starts: the latest position right after an EOD.
        starts = torch.where(_starts_document(tokens, eod_id), position_ids, 0).cummax(dim=1).values
        position_ids = position_ids - starts  # [b, s]
    return tokens.contiguous(), labels.contiguous(), loss_mask, position_ids


def _starts_document(tokens: torch.Tensor, eod_id: int) -> torch.Tensor:
    """[b, s] bool: True where the previous input token is an EOD (a new document begins)."""
    starts = torch.zeros_like(tokens, dtype=torch.bool)
    starts[:, 1:] = tokens[:, :-1] == eod_id
    return starts


def document_attention_mask(tokens: torch.Tensor, eod_id: int) -> torch.Tensor:
    """Megatron-LM's ``reset_attention_mask``: bool [b, 1, s, s], True where query i may attend
    key j, i.e. j <= i and no EOD at positions j..i-1 (the EOD belongs to the document it ends).

    An explicit mask [b, 1, s, s] (one byte per pair) instead of causal attention's implicit
    one: built only when the option is on, so the default path keeps ``is_causal``.
    """
    document = _starts_document(tokens, eod_id).cumsum(dim=1)  # [b, s] document index
    same = document.unsqueeze(2) == document.unsqueeze(1)  # [b, s, s]
    seq = tokens.shape[1]
    causal = torch.ones(seq, seq, dtype=torch.bool, device=tokens.device).tril()  # [s, s]
    return (same & causal).unsqueeze(1)  # [b, 1, s, s]
