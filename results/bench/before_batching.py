"""The sampling figures of `ladir-bench bench`, measured on the code before cross-problem batching
(commit 3227b68: one problem per `sample` call, HF `generate` for AR, LaDiR one problem at a time),
with the same untrained tiny models and the same pinned workload (see harness/tools/bench.py).

    git worktree add /tmp/old 3227b68 && cd /tmp/old
    PYTHONPATH=/tmp/old python /path/to/ladir-bench/results/bench/before_batching.py > before-batching.json
"""
import json, statistics, sys, tempfile, time
from pathlib import Path
import torch
from harness.config import load_config, parse_override
from harness.context import RunContext
from harness.methods import get_method_class
from harness.lm import sample_completions
from ladir.vae import LatentStats

def ctx_for(method, root):
    return RunContext(load_config("tiny", None, [parse_override(o) for o in [f"method={method}", "task=countdown4", "device=cpu"]]), root / method, root)

def med(fn, repeats=3):
    fn(); ts = []
    for _ in range(repeats):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return statistics.median(ts)

root = Path(tempfile.mkdtemp())
ctx = ctx_for("ar-sft", root)
model = ctx.backbone.fresh_model().eval()
tok = ctx.tokenizer
T, N, S, A = 59, 3, 10, 28   # the workload `ladir-bench bench` pins (reference medians, countdown4, tiny tokenizer)
problems = ctx.task.problems("test")
def ar(problem, n):
    torch.manual_seed(0)
    # min_new_tokens pins the length as the new bench does (no early stop)
    return model.generate(input_ids=torch.tensor([[tok.bos_token_id, *tok.encode(problem["prompt"], add_special_tokens=False)]]).expand(n, -1),
                          attention_mask=None, do_sample=True, top_k=0, max_new_tokens=T, min_new_tokens=T, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
lctx = ctx_for("ladir", root)
ladir = get_method_class("ladir")(lctx)
fresh = lctx.backbone.fresh_model
ladir.vae = ladir._vae(fresh(), fresh()).requires_grad_(False).eval()
shape = (ladir.options.latent_tokens, ladir.options.latent_dim)
ladir.stats = LatentStats(torch.zeros(shape), torch.ones(shape))
ladir.reasoner = ladir._reasoner(fresh()).requires_grad_(False).eval()
with torch.no_grad():
    ladir.reasoner.spec_head.weight.zero_(); ladir.reasoner.spec_head.bias.fill_(-1e4)
ladir.vae.max_sentence_tokens = S
knobs = ladir.sample_knobs({"steps": 10, "max_blocks": N, "max_answer_tokens": A})
with torch.no_grad():
    ar_s = med(lambda: ar(problems[0], 100))
    la_s = med(lambda: ladir._generate(problems[0], 100, knobs))
    k10 = med(lambda: [ar(p, 10) for p in problems[:10]])
print(json.dumps({"revision": "3227b68", "sample_ratio_ladir_ar": la_s / ar_s, "ar_samples_per_s": 100 / ar_s, "ladir_samples_per_s": 100 / la_s,
                  "k10_one_problem_samples_per_s": 100 / k10, "batching_speedup": 1.0}, indent=1))
