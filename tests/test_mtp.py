"""MTP (AR + multi-token latent-token objective): the future-token heads see only earlier tokens, the
auxiliary loss is aligned to offsets 2..m, m = 1 is AR-SFT, and a tiny train + eval through the CLI."""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F

from baselines.mtp import MultiTokenLM, future_token_loss
from harness.backbone import build_char_tokenizer
from harness.lm import IGNORE, encode_pairs, lm_loss
from tests.conftest import COUNTDOWN_TEXT, micro_args, micro_lm, run_cli


def _module(future_tokens=4):
    tokenizer = build_char_tokenizer([COUNTDOWN_TEXT])
    lm = micro_lm(tokenizer)
    module = MultiTokenLM(lm, future_tokens)
    for head in module.heads:  # leave the identity start so each head is a distinct function
        torch.nn.init.normal_(head.down.weight, std=0.2)
    return module, tokenizer


def _future(module, ids):
    hidden = module.lm(input_ids=ids, output_hidden_states=True).hidden_states[-1]
    return module.future_logits(hidden)


def test_future_heads_see_only_earlier_tokens():
    module, tokenizer = _module()
    ids = torch.tensor([tokenizer.encode(COUNTDOWN_TEXT, add_special_tokens=False)])
    changed = ids.clone()
    cut = 20
    changed[0, cut + 1:] = torch.randint(10, len(tokenizer), (ids.size(1) - cut - 1,))
    for before, after in zip(_future(module, ids), _future(module, changed), strict=True):
        assert torch.allclose(before[:, : cut + 1], after[:, : cut + 1], atol=1e-5)
        assert not torch.allclose(before[:, cut + 1:], after[:, cut + 1:], atol=1e-3)


def test_future_token_loss_is_aligned_to_offsets_two_to_m():
    torch.manual_seed(0)
    vocab, length = 7, 9
    logits = [torch.randn(1, length, vocab) for _ in range(3)]  # offsets 2, 3, 4
    labels = torch.full((1, length), IGNORE)
    labels[0, 6] = 5
    expected = torch.stack([F.cross_entropy(logits[j][0, 6 - (j + 2)][None], torch.tensor([5])) for j in range(3)]).mean()
    assert torch.allclose(future_token_loss(logits, labels), expected)


def test_one_future_token_is_plain_ar_sft():
    module, tokenizer = _module(future_tokens=1)
    assert len(module.heads) == 0
    problems = [{"prompt": "Use 12 7 3 to make 57.", "reference": "12+7=19. 19*3=57. The answer is (12+7)*3."}]
    batch = encode_pairs(tokenizer, [p["prompt"] for p in problems], [p["reference"] for p in problems], 128)
    loss, _, hidden = lm_loss(module.lm, tokenizer, problems, 128, return_hidden=True)
    assert torch.allclose(loss, lm_loss(module.lm, tokenizer, problems, 128))
    assert hidden.shape[:2] == batch["input_ids"].shape


def test_tiny_train_and_eval(runs_dir):
    run_cli(["train", "--method", "mtp", "--task", "countdown3", "--run", "m", "--steps", "40",
             *micro_args("train.lr=3e-3", "method_options.future_tokens=3")], runs_dir)
    log = [json.loads(line) for line in (runs_dir / "m" / "mtp" / "log.jsonl").read_text().splitlines()]
    assert {"next_token_loss", "future_token_loss"} <= log[0].keys()
    first, last = (sum(r["future_token_loss"] for r in rows) / 5 for rows in (log[:5], log[-5:]))
    assert last < 0.8 * first, (first, last)
    metrics = json.loads(run_cli(["eval", "--run", "m", "--k", "2", "--limit", "3", "--json"], runs_dir).stdout)
    assert metrics["method"] == "mtp" and metrics["n_samples"] == 6
    bad = run_cli(["train", "--method", "mtp", "--task", "countdown3", "--run", "m2", "--steps", "2",
                   *micro_args("method_options.future_tokens=0")], runs_dir, check=False)
    assert bad.returncode == 2 and "future_tokens" in bad.stderr and "Traceback" not in bad.stderr
