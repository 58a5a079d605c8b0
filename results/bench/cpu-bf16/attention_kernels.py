"""Why bf16 on the CPU trains with eager attention: one training step of the tiny preset's Llama
(d = 128, 4 layers, batch 64 x 86 tokens, AdamW) in float32 and under bf16 autocast, with sdpa and with
eager attention, and the seconds each spends in its attention kernels' forward and backward
(torch.profiler), median of REPEATS steps after a warm-up. The matmuls alone, in both dtypes, show
what AMX offers.

    python results/bench/cpu-bf16/attention_kernels.py [REPEATS] > results/bench/cpu-bf16/attention-kernels.json
"""
import json
import statistics
import sys
import time

import torch
from torch.profiler import profile
from transformers import LlamaConfig, LlamaForCausalLM

REPEATS = int(sys.argv[1]) if len(sys.argv) > 1 else 10
BATCH, LENGTH, VOCAB = 64, 86, 40


def model_with(attention: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                                        num_key_value_heads=4, intermediate_size=512, attn_implementation=attention))


def step_seconds(attention: str, bf16: bool) -> dict[str, float]:
    model = model_with(attention)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, VOCAB, (BATCH, LENGTH), generator=torch.Generator().manual_seed(1))

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    with profile() as profiled:
        for _ in range(3):
            step()
    kernels = {}
    for event in profiled.key_averages():
        if "attention" in event.key or event.key in ("aten::bmm", "aten::_softmax", "aten::_softmax_backward_data"):
            kernels[event.key] = round(event.self_cpu_time_total / 3 / 1e6, 4)  # seconds a step
    return {"seconds_per_step": round(statistics.median(times), 4), "attention_kernels_s_per_step": kernels}


def matmul_gflops(dtype: torch.dtype) -> float:
    """The MLP's up-projection at this batch: (B*L, 128) x (128, 512)."""
    x, w = torch.randn(BATCH * LENGTH, 128, dtype=dtype), torch.randn(128, 512, dtype=dtype)
    for _ in range(3):
        x @ w
    start = time.perf_counter()
    for _ in range(50):
        x @ w
    return round(2 * BATCH * LENGTH * 128 * 512 * 50 / (time.perf_counter() - start) / 1e9, 1)


report = {"threads": torch.get_num_threads(), "torch": torch.__version__, "repeats": REPEATS,
          "amx_bf16": "amx_bf16" in open("/proc/cpuinfo").read(),
          "matmul_gflops": {"float32": matmul_gflops(torch.float32), "bfloat16": matmul_gflops(torch.bfloat16)},
          "steps": {f"{'bf16' if bf16 else 'fp32'} {attention}": step_seconds(attention, bf16)
                    for bf16 in (False, True) for attention in ("sdpa", "eager")}}
print(json.dumps(report, indent=1))
