"""LoRA adapters as a peft adapter directory on the Hugging Face export of their base.

    save_peft_adapter(cfg, adapters, lora, vocab, out_dir, architecture, base_name)

writes ``adapter_config.json`` + ``adapter_model.safetensors`` with peft's own ``save_pretrained``,
so that ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(hf_base), out_dir)``
computes what our adapted model computes (``hf_base``: ``convert_to_hf.py`` of the base).

A factor B [out, r] has the rows of its layer's weight, so it converts as the weight converts:
GPTNeoX keeps the names (``gpt_neox.layers.i.attention.query_key_value``, ...); Llama/Mistral split
the fused ``query_key_value`` rows into ``q_proj`` / ``k_proj`` / ``v_proj`` and ``dense_h_to_4h``
into ``up_proj`` / ``gate_proj``. Each part keeps the whole A [r, in]: ``B_q A`` is exactly the
``q_proj`` rows of ``B A``, so the split adapters have the same rank and compute the same output.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from megatron_lite.checkpoint.hf import hf_config_dict, state_dict_to_hf
from megatron_lite.checkpoint.hf_llama import llama_config_dict, state_dict_to_llama
from megatron_lite.checkpoint.lora import LORA_A, LORA_B
from megatron_lite.config.lora import LoraSettings
from megatron_lite.config.schema import ModelConfig


def _weights_to_hf(sd: dict[str, torch.Tensor], cfg: ModelConfig, vocab: int, architecture: str) -> dict[str, torch.Tensor]:
    if architecture == "GPTNeoXForCausalLM":
        return state_dict_to_hf(sd, vocab)
    return state_dict_to_llama(sd, cfg, vocab)


def adapters_to_hf(adapters: dict[str, torch.Tensor], cfg: ModelConfig, vocab: int,
                   architecture: str) -> dict[str, torch.Tensor]:
    """Our full adapters (``<layer>.lora_A.weight``, ``<layer>.lora_B.weight``) under the names of
    the ``architecture`` model's modules (``<hf module>.lora_A.weight`` ...), as peft files name them."""
    out: dict[str, torch.Tensor] = {}
    for key, lora_b in adapters.items():
        if not key.endswith(LORA_B):
            continue
        layer = key.removesuffix(LORA_B)
        lora_a = adapters[layer + LORA_A]
        for hf_name, part in _weights_to_hf({layer + ".weight": lora_b}, cfg, vocab, architecture).items():
            module = hf_name.removesuffix(".weight")
            out[module + ".lora_A.weight"] = lora_a.contiguous()  # [r, in]
            out[module + ".lora_B.weight"] = part.contiguous()  # [out_part, r]
    return out


def _hf_skeleton(cfg: ModelConfig, vocab: int, architecture: str) -> Any:
    """The ``architecture`` model on the meta device (no memory): peft needs its modules only."""
    import transformers

    if architecture == "GPTNeoXForCausalLM":
        config = transformers.GPTNeoXConfig(**hf_config_dict(cfg, vocab, None, None))
    else:
        values, _ = llama_config_dict(cfg, vocab, None, None, architecture)
        config = getattr(transformers, architecture.replace("ForCausalLM", "Config"))(**values)
    with torch.device("meta"):
        return getattr(transformers, architecture)(config)


def save_peft_adapter(cfg: ModelConfig, adapters: dict[str, torch.Tensor], lora: dict[str, Any], vocab: int,
                      out_dir: str, architecture: str, base_name: str | None) -> list[str]:
    """Write the peft adapter directory; returns the Hugging Face modules it adapts.
    ``base_name``: what ``adapter_config.json`` names as ``base_model_name_or_path``."""
    from peft import LoraConfig, get_peft_model

    settings = LoraSettings.of(lora)
    hf_adapters = adapters_to_hf(adapters, cfg, vocab, architecture)
    targets = sorted({key.removesuffix(LORA_A).rsplit(".", 1)[-1] for key in hf_adapters if key.endswith(LORA_A)})
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=targets, bias="none", task_type="CAUSAL_LM")
    # The model stays on the meta device (a 7B base would need its full memory otherwise), so
    # the adapters are handed to save_pretrained as the state dict to save, under the names the
    # PeftModel gives them (``base_model.model.<module>.lora_A.default.weight``).
    with warnings.catch_warnings():  # transformers' deprecation of a name peft still calls
        warnings.simplefilter("ignore", FutureWarning)
        model = get_peft_model(_hf_skeleton(cfg, vocab, architecture), config, low_cpu_mem_usage=True)
    model.peft_config["default"].base_model_name_or_path = base_name  # get_peft_model sets it from the model
    names = [name for name in model.state_dict() if ".lora_" in name]
    plain = {name: name.removeprefix("base_model.model.").replace(".default.", ".") for name in names}
    missing = sorted(set(plain.values()) ^ set(hf_adapters))
    if missing:
        raise ValueError(f"adapters and {architecture} modules do not match: {missing[:4]}")
    model.save_pretrained(out_dir, state_dict={name: hf_adapters[plain[name]] for name in names})
    return targets
