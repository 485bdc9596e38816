"""Hugging Face Llama / Mistral at tensor parallelism 2 (two gloo ranks): the weights a run loads
(from the converted tp-2 checkpoint, and from the HF directory itself as ``load``) give
transformers' logits and its greedy tokens, for GQA groups, biases and the sliding window."""

from __future__ import annotations

import torch

from .spawn import run_distributed

VOCAB = 300  # test_hf_interop's (not imported here: the ranks need not import transformers)
NAMES = ("llama-llama3-biases-legacy-config", "mistral-window")  # both GQA: one key/value group per rank
NEW_TOKENS = 12
PROMPT = [5, 17, 42]


class _Ids:
    """A tokenizer stand-in: the generation loop needs a vocabulary, an end of document and text."""

    vocab_size, eod = VOCAB, None

    def detokenize(self, ids: list[int]) -> str:
        return " ".join(map(str, ids))


def _run(rank: int, world: int, sources: dict[str, tuple[str, str]], x: torch.Tensor) -> dict:
    import yaml

    from megatron_lite.checkpoint.loader import load_model_weights
    from megatron_lite.config import config_from_flat, resolve
    from megatron_lite.inference.generation import SamplingParams, generate_batch
    from megatron_lite.launcher.worker import init_distributed
    from megatron_lite.model.gpt import GPTModel

    results, state = {}, None
    for name, (ckpt, hf_dir) in sources.items():
        with open(f"{ckpt}/config.yml", encoding="utf-8") as handle:
            flat = yaml.safe_load(handle)
        for source in (ckpt, hf_dir):
            cfg = resolve(config_from_flat({**flat, "load": source}), world)
            state = state or init_distributed(cfg)
            model = GPTModel(cfg.model, state).eval()
            load_model_weights(model, cfg, state.tp_rank, pipelined=False)
            with torch.no_grad():
                logits = model(x, gather_logits=True)[..., :VOCAB]
            generated = generate_batch(model, _Ids(), [PROMPT], SamplingParams(max_new_tokens=NEW_TOKENS))
            results[name, source == hf_dir] = {"logits": logits, "tokens": generated[0].tokens}
    return results


def test_llama_and_mistral_at_tp2_equal_transformers(tmp_path):
    from tests.unit.test_hf_interop import tokens, tool_main
    from tests.unit.test_hf_llama import VARIANTS, hf_llama

    sources, expected, x = {}, {}, tokens()
    for name in NAMES:
        hf_dir, ref = hf_llama(tmp_path / name, **VARIANTS[name])
        ckpt = tmp_path / name / "ckpt"
        assert tool_main("convert_from_hf.py", "--input_dir", hf_dir, "--output_dir", ckpt,
                         "--model_parallel_size", 2) == 0
        sources[name] = (str(ckpt), str(hf_dir))
        with torch.no_grad():
            out = ref.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=None,
                               pad_token_id=0)
            expected[name] = {"logits": ref(x).logits, "tokens": out[0, len(PROMPT):].tolist()}
    for rank_results in run_distributed(_run, 2, sources, x):
        for (name, from_hf_dir), got in rank_results.items():
            where = f"{name} from {'the HF directory' if from_hf_dir else 'the tp-2 checkpoint'}"
            torch.testing.assert_close(got["logits"], expected[name]["logits"], rtol=1e-5, atol=1e-5,
                                       msg=lambda m, w=where: f"{w}: {m}")
            assert got["tokens"] == expected[name]["tokens"], where
