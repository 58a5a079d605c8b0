"""AR with latent tokens through multi-token prediction ("Reasoning with Latent Tokens in Diffusion
Language Models", He, Welleck & Fried 2026, §5).

The paper traces the edge of masked diffusion on planning to its joint prediction of tokens it does
not decode yet ("latent tokens"), and brings the same signal to an autoregressive model with an
auxiliary objective: at every position, extra heads predict the tokens t+2, ..., t+m besides the
usual next token t+1. The heads share the trunk and the unembedding; each is one residual MLP
block on the trunk's last hidden state, so head j at position i sees exactly what the next-token
head sees (tokens <= i) and nothing later. Decoding is plain AR with the next-token head: the extra
heads only shape the trunk's representation during training.

    L = L_next + aux_weight * mean_{j=2..m} CE(head_j(h_i), x_{i+j})
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from baselines.ar_sft import ArSft
from harness.errors import BadInput
from harness.lm import IGNORE, lm_loss
from harness.train.checkpoint import final_checkpoint, load_modules
from harness.train.seeding import Shard, seed_initialisation
from harness.train.trainer import Trainer


@dataclass
class MtpOptions:
    future_tokens: int = 4  # m: the heads predict t+1 (the LM head) .. t+m
    aux_weight: float = 1.0  # weight of the mean auxiliary CE against the next-token CE
    loss_on_prompt: bool = False  # as AR-SFT: the loss covers the completion only

    def __post_init__(self) -> None:
        if self.future_tokens < 1:
            raise BadInput(f"method_options.future_tokens must be >= 1 (1 = plain AR-SFT), got {self.future_tokens}")
        if self.aux_weight < 0:
            raise BadInput(f"method_options.aux_weight must be >= 0, got {self.aux_weight}")


class FutureTokenHead(nn.Module):
    """Head j: a residual MLP block on the last hidden state; the logits come from the shared unembedding."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.norm = nn.RMSNorm(hidden_size)
        self.up = nn.Linear(hidden_size, 2 * hidden_size)
        self.down = nn.Linear(2 * hidden_size, hidden_size)
        nn.init.zeros_(self.down.weight)  # starts as the identity: head j begins as a copy of the LM head
        nn.init.zeros_(self.down.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.down(F.silu(self.up(self.norm(hidden))))


class MultiTokenLM(nn.Module):
    """The backbone (`lm`, a Hugging Face causal LM) plus heads for offsets 2..m."""

    def __init__(self, lm, future_tokens: int):
        super().__init__()
        self.lm = lm
        self.heads = nn.ModuleList(FutureTokenHead(lm.config.hidden_size) for _ in range(future_tokens - 1))

    def future_logits(self, hidden: torch.Tensor) -> list[torch.Tensor]:
        """Logits of tokens t+2..t+m at every position, from the trunk's (post-norm) last hidden state."""
        unembed = self.lm.get_output_embeddings()
        return [unembed(head(hidden)) for head in self.heads]


def future_token_loss(future_logits: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """Mean over offsets j = 2..m of the CE of position i predicting label i+j (IGNORE-masked)."""
    losses = []
    for offset, logits in enumerate(future_logits, start=2):
        if labels.size(1) <= offset:
            continue
        losses.append(F.cross_entropy(logits[:, :-offset].reshape(-1, logits.size(-1)).float(),
                                      labels[:, offset:].reshape(-1), ignore_index=IGNORE))
    return torch.stack(losses).mean() if losses else labels.new_zeros((), dtype=torch.float)


class MultiTokenPrediction(ArSft):
    """AR-SFT's data and decoding, with the future-token heads added to its loss."""

    Options = MtpOptions
    phase_name = "mtp"
    stages = ("mtp",)
    lm_folder = "lm"  # the trunk and LM head; the future-token heads (extra.safetensors) play no part in decoding

    def _module(self, lm) -> MultiTokenLM:
        return MultiTokenLM(lm, self.options.future_tokens).to(self.ctx.device)

    def train(self, stage: str | None = None) -> Path:
        if done := self.finished(self.phase_name):
            return done
        ctx, o = self.ctx, self.options
        seed_initialisation(ctx.seed, self.phase_name)
        module = self._module(ctx.backbone.base_model())

        def loss_fn(step: int, shard: Shard):
            next_loss, batch, hidden = lm_loss(module.lm, ctx.tokenizer, ctx.batch(self.phase_name, step, shard=shard),
                                               ctx.config.model.max_length, o.loss_on_prompt, ctx.device,
                                               return_hidden=True)
            if not module.heads:
                return next_loss, {}
            aux = future_token_loss(module.future_logits(hidden), batch["labels"])
            return next_loss + o.aux_weight * aux, {"next_token_loss": float(next_loss.detach()),
                                                   "future_token_loss": float(aux.detach())}

        final = Trainer(ctx.phase(self.phase_name, count_tokens=True), module).fit(loss_fn)
        self.model = module.lm.eval()
        return final

    def load(self) -> None:
        module = self._module(self.ctx.backbone.fresh_model())
        load_modules(module, final_checkpoint(self.ctx.run_dir / self.phase_name)[1])
        self.model = module.lm.eval()
