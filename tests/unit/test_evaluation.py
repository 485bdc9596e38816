"""The lm-eval adapter and our evaluation tasks on one process (no process group)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from megatron_lite.evaluation.lm_adapter import MegatronLiteLM
from megatron_lite.evaluation.perplexity import EvaluationError, evaluate_perplexity
from megatron_lite.evaluation.reference_metrics import read_references
from tests.unit.test_generation import ByteTokenizer, tiny_model


def make_lm(batch_size: int = 3) -> MegatronLiteLM:
    return MegatronLiteLM(tiny_model(), ByteTokenizer(), vocab_size=257, batch_size=batch_size, show_progress=False)


def direct_logprob(lm: MegatronLiteLM, context: list[int], continuation: list[int]) -> float:
    """Sum of log p(continuation | context), one unbatched forward."""
    ids = torch.tensor([context + continuation])
    with torch.no_grad():
        logp = F.log_softmax(lm.model(ids, gather_logits=True)[0, :, :257].float(), -1)
    rows = range(len(context) - 1, len(context) + len(continuation) - 1)
    return float(sum(logp[r, t] for r, t in zip(rows, continuation)))


def requests(*pairs):
    return [SimpleNamespace(args=pair) for pair in pairs]


def test_loglikelihood_matches_a_direct_forward_and_does_not_depend_on_batching():
    pairs = [("Question: hot or cold?\nAnswer:", " cold"), ("ab", "cd"), ("a much longer context here", " x "),
             ("", "starts from end-of-document")]
    results = make_lm(3).loglikelihood(requests(*pairs), disable_tqdm=True)
    single = make_lm(1).loglikelihood(requests(*pairs), disable_tqdm=True)
    lm, tok = make_lm(), ByteTokenizer()
    for (context, continuation), (score, greedy), (score1, _) in zip(pairs, results, single):
        # Trailing context spaces move to the continuation, as lm-eval's HF model does.
        ctx = context.rstrip()
        cont = context[len(ctx):] + continuation
        ctx_ids = tok.tokenize(ctx) if ctx else [tok.eod]
        assert score == pytest.approx(direct_logprob(lm, ctx_ids, tok.tokenize(cont)), abs=1e-4)
        assert score == pytest.approx(score1, abs=1e-5) and isinstance(greedy, bool)


def test_rolling_loglikelihood_of_a_short_document_is_one_forward_from_end_of_document():
    lm, tok = make_lm(), ByteTokenizer()
    text = "the quick brown fox"
    (total,) = lm.loglikelihood_rolling(requests((text,)), disable_tqdm=True)
    ids = tok.tokenize(text)
    assert total == pytest.approx(direct_logprob(lm, [tok.eod], ids), abs=1e-4)
    # Longer than the 48-token context: several windows, still every token scored once.
    long_text = "abcdefghij" * 12
    (long_total,) = lm.loglikelihood_rolling(requests((long_text,)), disable_tqdm=True)
    assert math.isfinite(long_total) and long_total < total


def test_perplexity_of_a_jsonl_file(tmp_path):
    lm = make_lm()
    texts = ["first document", "a second, longer document " * 4]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    metrics = evaluate_perplexity(lm, str(path))
    nll = -sum(lm.loglikelihood_rolling(requests(*[(t,) for t in texts]), disable_tqdm=True))
    tokens = sum(len(t.encode()) for t in texts)  # byte tokenizer: a token per byte
    assert metrics["tokens"] == metrics["bytes"] == tokens and metrics["documents"] == 2
    assert metrics["loss"] == pytest.approx(nll / tokens)
    assert metrics["bits_per_byte"] == pytest.approx(nll / tokens / math.log(2))
    assert evaluate_perplexity(lm, str(path), limit=1)["documents"] == 1
    with pytest.raises(EvaluationError, match="neither a dataset prefix"):
        evaluate_perplexity(lm, str(tmp_path / "missing"))


@pytest.mark.parametrize("line, message", [
    ('{"prompt": "a"}', "expected"), ('["a", "b"]', "expected"), ('{"prompt": "a", "references": []}', "expected"),
    ("{not json", "not valid JSON"),
])
def test_reference_file_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "refs.jsonl"
    path.write_text('{"prompt": "p", "reference": "r"}\n\n' + line + "\n")
    with pytest.raises(EvaluationError, match=f"refs.jsonl:3: {message}"):
        read_references(str(path))


def test_reference_file_accepts_several_references(tmp_path):
    path = tmp_path / "refs.jsonl"
    path.write_text('{"prompt": "p", "references": ["r1", "r2"]}\n{"prompt": "q", "reference": "s"}\n')
    assert read_references(str(path)) == [("p", ["r1", "r2"]), ("q", ["s"])]


def test_invalid_utf8_in_a_reference_or_prompt_file_names_file_and_line(tmp_path):
    from megatron_lite.inference.main import GenerationError, read_prompts

    refs = tmp_path / "refs.jsonl"
    refs.write_bytes(b'{"prompt": "p", "reference": "r"}\n{"prompt": "\xff", "reference": "r"}\n')
    with pytest.raises(EvaluationError, match=r"refs.jsonl:2: not valid UTF-8 \(byte 0xff\)"):
        read_references(str(refs))
    prompts = tmp_path / "prompts.txt"
    prompts.write_bytes(b"first prompt\nsecond\nthird \xc3\x28 prompt\n")
    with pytest.raises(GenerationError, match=r"prompts.txt:3: not valid UTF-8"):
        read_prompts(str(prompts), "\n")
