"""Packed samples of several documents: eod_mask_loss, reset_position_ids, reset_attention_mask
(get_batch, the model, the pipeline layers, the training-step batches)."""

from __future__ import annotations

import pytest
import torch

from megatron_lite.config import config_from_flat
from megatron_lite.config.derived import resolve
from megatron_lite.data.loaders import document_attention_mask, get_batch
from megatron_lite.model.gpt import GPTModel
from megatron_lite.model.pipeline import EmbeddingPipe, LayerNormPipe, TransformerLayerPipe
from megatron_lite.training import steps

EOD = 0


def reference_ltor(data: list[list[int]], eod: int, reset_position_ids: bool,
                   reset_attention_mask: bool, eod_mask_loss: bool):
    """Megatron-LM's ``get_ltor_masks_and_position_ids`` in plain Python: (attention mask with
    True = masked out, [b][s][s]; loss mask [b][s]; position ids [b][s])."""
    b, s = len(data), len(data[0])
    attention = [[[1.0 if k <= q else 0.0 for k in range(s)] for q in range(s)] for _ in range(b)]
    loss = [[0.0 if eod_mask_loss and t == eod else 1.0 for t in row] for row in data]
    positions = [list(range(s)) for _ in range(b)]
    for r in range(b):
        prev = 0
        for i in [k for k in range(s) if data[r][k] == eod]:
            if reset_attention_mask:
                for q in range(i + 1, s):
                    for k in range(i + 1):
                        attention[r][q][k] = 0.0
            if reset_position_ids:
                for q in range(i + 1, s):
                    positions[r][q] -= i + 1 - prev
                prev = i + 1
    masked = [[[v < 0.5 for v in row] for row in matrix] for matrix in attention]
    return masked, loss, positions


def packed_text() -> torch.Tensor:
    """[4, 13]: EODs first, last, back to back, absent, and at random."""
    rows = [
        [3, EOD, 5, 6, EOD, EOD, 7, 8, 9, 4, 2, EOD, 6],
        [EOD, 4, 4, 4, EOD, 2, 2, 3, 3, 3, 3, 3, EOD],
        [5, 6, 7, 8, 9, 1, 2, 3, 4, 5, 6, 7, 8],
    ]
    random = torch.randint(0, 4, (1, 13), generator=torch.Generator().manual_seed(0))  # 0 = EOD
    return torch.cat([torch.tensor(rows), random])


@pytest.mark.parametrize("reset_position_ids", [False, True])
@pytest.mark.parametrize("eod_mask_loss", [False, True])
def test_get_batch_equals_megatron_reference(reset_position_ids, eod_mask_loss):
    text = packed_text()
    tokens, _, loss_mask, position_ids = get_batch(
        {"text": text}, eod_id=EOD, eod_mask_loss=eod_mask_loss, reset_position_ids=reset_position_ids)
    masked, loss, positions = reference_ltor(tokens.tolist(), EOD, reset_position_ids, True, eod_mask_loss)
    assert position_ids.tolist() == positions
    assert loss_mask.tolist() == loss
    mask = document_attention_mask(tokens, EOD)
    assert mask.dtype == torch.bool and mask.shape == (4, 1, 12, 12)
    assert (~mask[:, 0]).tolist() == masked


def test_without_resets_positions_and_mask_are_plain_causal():
    tokens, _, _, position_ids = get_batch({"text": packed_text()}, eod_id=EOD)
    masked, _, positions = reference_ltor(tokens.tolist(), EOD, False, False, False)
    assert position_ids.tolist() == positions
    assert all(row == [[k > q for k in range(12)] for q in range(12)] for row in masked)


def test_options_need_the_eod_id():
    with pytest.raises(ValueError, match="eod id"):
        get_batch({"text": packed_text()}, reset_position_ids=True)
    with pytest.raises(ValueError, match="eod id"):
        next(steps.micro_batches(iter([{"text": packed_text()}]), None, torch.device("cpu"),
                                 reset_attention_mask=True))


def model_cfg(**overrides):
    flat = {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 4, "seq_length": 32,
            "padded_vocab_size": 96, "make_vocab_size_divisible_by": 32,
            "train_micro_batch_size_per_gpu": 1, "optimizer": {"params": {"lr": 1e-3}}, **overrides}
    return resolve(config_from_flat(flat), 1).model


def two_documents() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(first document ending in EOD [1, 6], second document [1, 9], both packed [1, 15])."""
    gen = torch.Generator().manual_seed(3)
    first = torch.cat([torch.randint(1, 96, (1, 5), generator=gen), torch.tensor([[EOD]])], dim=1)
    second = torch.randint(1, 96, (1, 9), generator=gen)
    return first, second, torch.cat([first, second], dim=1)


def packed_inputs(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """tokens [b, s], reset position ids [b, s], document mask [b, 1, s, s] as train.py builds them."""
    text = torch.cat([packed, packed[:, :1]], dim=1)  # [b, s + 1]: the label of the last token
    tokens, _, _, position_ids = get_batch({"text": text}, eod_id=EOD, reset_position_ids=True)
    return tokens, position_ids, document_attention_mask(tokens, EOD)


@pytest.mark.parametrize("pos_emb", ["rotary", "learned", "sinusoidal", "alibi"])
def test_second_document_sees_nothing_of_the_first(pos_emb):
    extra = {"rotary_pct": 0.5} if pos_emb == "rotary" else {}
    model = GPTModel(model_cfg(pos_emb=pos_emb, **extra), seed=5).eval()
    first, second, packed = two_documents()
    tokens, position_ids, mask = packed_inputs(packed)
    with torch.no_grad():
        together = model(tokens, position_ids, attention_mask=mask)  # [1, 15, v]
        alone = [model(first), model(second)]
        plain = model(packed)
    torch.testing.assert_close(together[:, :6], alone[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(together[:, 6:], alone[1], rtol=1e-5, atol=1e-5)
    # Without the resets the second document reads the first one: the test has teeth.
    assert not torch.allclose(plain[:, 6:], alone[1], atol=1e-3)


def test_default_path_keeps_implicit_causal_attention(monkeypatch):
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(q, k, v, attn_mask=None, is_causal=False, **kwargs):
        calls.append((attn_mask, is_causal))
        return sdpa(q, k, v, attn_mask=attn_mask, is_causal=is_causal, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    model = GPTModel(model_cfg(pos_emb="rotary"), seed=5).eval()
    batch = next(steps.micro_batches(iter([{"text": packed_text()}]), EOD, torch.device("cpu")))
    assert batch[3] is None and batch[4] is None  # no positions, no mask: the model's defaults
    with torch.no_grad():
        model(batch[0])
        assert all(mask is None and causal for mask, causal in calls)
        calls.clear()
        tokens, position_ids, mask = packed_inputs(two_documents()[2])
        model(tokens, position_ids, attention_mask=mask)
    assert all(m is not None and m.dtype == torch.bool and not causal for m, causal in calls)


@pytest.mark.parametrize("resets, extras", [
    ({}, 0),
    ({"reset_position_ids": True}, 1),
    ({"reset_attention_mask": True}, 2),
    ({"reset_position_ids": True, "reset_attention_mask": True, "eod_mask_loss": True}, 2),
])
def test_micro_batches_and_pipeline_inputs(resets, extras):
    samples = iter([{"text": packed_text()}])
    batch = next(steps.micro_batches(samples, EOD, torch.device("cpu"), **resets))
    inputs, (labels, loss_mask) = next(steps._pipe_iter(iter([batch])))
    if extras == 0:
        assert torch.is_tensor(inputs) and torch.equal(inputs, batch[0])
    else:
        assert isinstance(inputs, tuple) and len(inputs) == 1 + extras
        assert all(t.is_contiguous() for t in inputs)
    assert (loss_mask == 0).any() == bool(resets.get("eod_mask_loss"))


def test_pipeline_layers_carry_positions_and_mask():
    """The pipeline stages (EmbeddingPipe, TransformerLayerPipe, final norm) on the packed inputs
    compute what GPTModel computes: positions and mask reach every layer."""
    cfg = model_cfg(pos_emb="rotary")
    model = GPTModel(cfg, seed=7).eval()
    emb = EmbeddingPipe(cfg, model.state, 7)
    emb.load_state_dict(model.embedding.state_dict())
    layers = []
    for i, reference in enumerate(model.layers):
        layers.append(TransformerLayerPipe(cfg, model.state, i, 7).eval())
        layers[-1].load_state_dict(reference.state_dict())
    norm = LayerNormPipe(model.state, cfg.hidden_size, eps=cfg.layernorm_epsilon)
    norm.load_state_dict(model.final_layernorm.state_dict())

    def run(inputs):
        x = emb(inputs)
        for layer in layers:
            x = layer(x)
        return model.lm_head(norm(x), model.embedding.weight)  # [b, s, v]

    tokens, position_ids, mask = packed_inputs(two_documents()[2])
    with torch.no_grad():
        torch.testing.assert_close(run((tokens, position_ids, mask)),
                                   model(tokens, position_ids, attention_mask=mask), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(run((tokens, position_ids)), model(tokens, position_ids),
                                   rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(run(tokens), model(tokens), rtol=1e-5, atol=1e-5)
