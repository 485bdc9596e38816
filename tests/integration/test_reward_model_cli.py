"""generate.py on a reward model's checkpoint (``train_impl: rm``) through deepy.py: one error
line naming it, no traceback (evaluate.py builds its model with the same ``build_model``;
tests/unit/test_reward_export.py covers that path in-process)."""

from __future__ import annotations

from tests.integration.common import deepy, gen_config
from tests.unit.test_reward_export import SHAPES, rm_checkpoint


def test_generate_on_a_reward_model_fails_with_one_line(tmp_path):
    ckpt = tmp_path / "rm"
    rm_checkpoint(ckpt, SHAPES["gptneox"][0])  # tied embeddings: before, it generated from them
    cfg = gen_config(tmp_path, ckpt, load=str(ckpt), text_gen_type="unconditional", num_samples=1)
    result = deepy("generate.py", str(ckpt / "global_step0" / "config.yml"), cfg, cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"{ckpt} is a reward model" in errors[0] and "no LM head" in errors[0]
