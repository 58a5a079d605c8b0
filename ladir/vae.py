"""LaDiR's beta-VAE over sentence blocks (paper §3.1): one reasoning sentence <-> one block of L_b latents.

Encoder: a trainable copy of the base backbone reads `<s> question sentence` followed by L_b
learnable embeddings; its last-layer hidden states at those L_b positions go through two linear maps
to mu and log sigma^2 (each L_b x d_z), and z = mu + sigma * eps. During training the latents get
isotropic noise N(0, k^2 I) and the sentence tokens are replaced by random vocabulary tokens with
probability p, so that nearby latents decode to the same sentence.

Decoder: the frozen base backbone, reading `<s>` then z projected to the hidden size (L_b prefix
embeddings; the projection is trainable), then writing the sentence and `</s>`. With
`decoder_context` it reads `<s> question earlier-sentences` before the latents (left-padded): a
latent then only has to say what the context does not (Countdown: which operands and which operator,
not the digits of the numbers or of the result), and any latent decodes to a step that uses the pool. `train_decoder=True`
fine-tunes it as well: a from-scratch tiny base is too weak a language model to be steered through
L_b input embeddings alone (measured on tiny Countdown-4: even free per-sentence latents plateau
near 20% exact reconstruction with it frozen), where the paper's pretrained 8B LLM is not.

The diffusion model works on normalised latents (mu - mean) / std, with per-coordinate statistics
of mu over training sentences (`LatentStats`), so its targets are of unit scale.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from harness.config import TrainConfig
from harness.lm import CachedSequence, SharedContextPack, pad_ids, write_tokens
from harness.progress import console
from harness.train import distributed
from harness.train.checkpoint import link_phase, phase_done
from tasks import Problem, Task

# (context, sentence): a sentence is encoded with its question (and, with `decoder_context`, the
# reasoning sentences before it) as context.
SentencePair = tuple[str, str]


def reasoning_context(question: str, earlier: Sequence[str]) -> str:
    """The text a sentence is written after: its question, then the reasoning sentences before it."""
    return " ".join([question, *earlier])


def sentence_context(question: str, earlier: Sequence[str], earlier_sentences: bool) -> str:
    """The context a sentence is encoded and decoded with: its question, then (with `earlier_sentences`,
    `decoder_context: reasoning`) the reasoning sentences before it."""
    return reasoning_context(question, earlier) if earlier_sentences else question


def sentence_pairs(task: Task, problems: Sequence[Problem], max_blocks: int | None = None,
                   earlier_sentences: bool = False) -> list[SentencePair]:
    """Every reasoning sentence of the problems' references, with its question as context (and the
    sentences before it, with `earlier_sentences`)."""
    pairs = []
    for problem in problems:
        sentences, _ = task.split_target(problem["reference"])
        sentences = sentences[:max_blocks]
        pairs += [(sentence_context(problem["prompt"], sentences[:i], earlier_sentences), s)
                  for i, s in enumerate(sentences)]
    return pairs


class SentenceVAE(nn.Module):
    """beta-VAE: trainable encoder + heads + latent-to-prefix projection, and the decoder.

    A frozen decoder is held by reference, not registered as a child: it is the unchanged base
    backbone, so it is neither trained nor saved with the VAE's checkpoints (pass the base model
    when loading). A trained decoder (`train_decoder=True`) is a child, saved with the rest.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module, tokenizer, latent_tokens: int, latent_dim: int,
                 beta: float = 1e-5, latent_noise: float = 3.0, token_replace_prob: float = 0.3,
                 max_sentence_tokens: int = 64, train_decoder: bool = False, decoder_context: bool = False):
        super().__init__()
        self.decoder_context = decoder_context
        hidden = encoder.config.hidden_size
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.latent_tokens, self.latent_dim = latent_tokens, latent_dim
        self.beta, self.latent_noise, self.token_replace_prob = beta, latent_noise, token_replace_prob
        self.max_sentence_tokens = max_sentence_tokens
        self.latent_queries = nn.Parameter(0.02 * torch.randn(latent_tokens, hidden))  # the L_b learnable embeddings
        self.to_mu = nn.Linear(hidden, latent_dim)
        self.to_logvar = nn.Linear(hidden, latent_dim)
        self.to_prefix = nn.Linear(latent_dim, decoder.config.hidden_size)  # z -> decoder input embeddings
        if train_decoder:
            self.decoder = decoder
        else:
            object.__setattr__(self, "decoder", decoder.requires_grad_(False).eval())
        special = set(tokenizer.all_special_ids)
        ordinary = [i for i in range(len(tokenizer)) if i not in special]
        self.register_buffer("replacement_ids", torch.tensor(ordinary), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.latent_queries.device

    # ------------------------------------------------------------------------------- encoder
    def _sentence_ids(self, sentence: str) -> list[int]:
        return self.tokenizer.encode(sentence, add_special_tokens=False)[: self.max_sentence_tokens]

    def encode(self, pairs: Sequence[SentencePair], corrupt: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar), each (N, L_b, d_z): `<s> question sentence q_1..q_Lb` -> last hidden at q_i -> Linear.
        A problem's sentences, whose contexts extend one another, are read in one packed row
        (`SharedContextPack`): the question once, not once per sentence."""
        tok = self.tokenizer
        contexts, sentences = [], []
        for question, sentence in pairs:
            contexts.append([tok.bos_token_id, *tok.encode(question, add_special_tokens=False)])
            sentence_ids = torch.tensor(self._sentence_ids(sentence), dtype=torch.long)
            if corrupt and self.token_replace_prob > 0 and len(sentence_ids):
                # input tokens replaced at random (prob p) by random vocabulary tokens
                replace = torch.rand(len(sentence_ids)) < self.token_replace_prob
                random_ids = self.replacement_ids.cpu()[torch.randint(len(self.replacement_ids), (len(sentence_ids),))]
                sentence_ids = torch.where(replace, random_ids, sentence_ids)
            sentences.append(sentence_ids.to(self.device))
        pack = SharedContextPack(contexts, [len(s) + self.latent_tokens for s in sentences], tok.pad_token_id,
                                 self.device)
        embed = self.encoder.get_input_embeddings()
        queries = self.latent_queries.to(embed.weight.dtype)
        private = [torch.cat([embed(s), queries]) for s in sentences]
        hidden = pack.run(self.encoder.base_model, private).last_hidden_state
        at = pack.columns([self.latent_tokens] * len(pairs), start=[len(s) for s in sentences])
        at_queries = hidden[at].reshape(len(pairs), self.latent_tokens, -1)  # (N, L_b, H)
        return self.to_mu(at_queries), self.to_logvar(at_queries)

    # ------------------------------------------------------------------------------- decoder
    def context_ids(self, context: str) -> list[int]:
        """What the decoder reads before a block's latents: `<s>`, then (with `decoder_context`) the context."""
        tok = self.tokenizer
        return [tok.bos_token_id, *tok.encode(context, add_special_tokens=False)] if self.decoder_context \
            else [tok.bos_token_id]

    def latent_embeddings(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, L_b, d_z) projected to the decoder's input embeddings (N, L_b, H)."""
        return self.to_prefix(z).to(self.decoder.get_input_embeddings().weight.dtype)

    def _check_contexts(self, contexts: Sequence[str] | None, rows: int) -> None:
        if self.decoder_context and (contexts is None or len(contexts) != rows):
            raise ValueError("a context-conditioned VAE decoder needs one context text per latent")

    def reconstruction_loss(self, z: torch.Tensor, sentences: Sequence[str],
                            contexts: Sequence[str] | None = None) -> torch.Tensor:
        """Mean token CE of the decoder writing each sentence and `</s>` after its latent prefix (the
        rows of one problem packed as in `encode`)."""
        self._check_contexts(contexts, z.size(0))
        tok = self.tokenizer
        targets = [torch.tensor([*self._sentence_ids(s), tok.eos_token_id], device=z.device) for s in sentences]
        context_rows = [self.context_ids(c) for c in (contexts if self.decoder_context else [""] * len(targets))]
        pack = SharedContextPack(context_rows, [self.latent_tokens + len(t) for t in targets], tok.pad_token_id,
                                 z.device)
        embed = self.decoder.get_input_embeddings()
        private = [torch.cat([latents, embed(t)])
                   for latents, t in zip(self.latent_embeddings(z), targets, strict=True)]
        logits = pack.run(self.decoder, private).logits
        # the last latent predicts the sentence's first token, each written token the next
        predicting = logits[pack.columns([len(t) for t in targets], start=[self.latent_tokens - 1] * len(targets))]
        return F.cross_entropy(predicting.float(), torch.cat(targets))

    def loss(self, pairs: Sequence[SentencePair]) -> tuple[torch.Tensor, dict[str, float]]:
        """L_beta-VAE = E_q[-log p(x|z)] + beta KL(q(z|x) || N(0, I)), with the paper's two regularisers."""
        mu, logvar = self.encode(pairs, corrupt=True)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)  # z = mu + sigma * eps
        z = z + self.latent_noise * torch.randn_like(z)  # z' = z + eta, eta ~ N(0, k^2 I)
        recon = self.reconstruction_loss(z, [s for _, s in pairs], [c for c, _ in pairs])
        # KL(N(mu, sigma^2) || N(0, I)), summed over the block's latents, mean over sentences
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum((1, 2)).mean()
        return recon + self.beta * kl, {"recon": float(recon.detach()), "kl": float(kl.detach())}

    @torch.no_grad()
    def read_contexts(self, contexts: Sequence[str] | None = None, rows: int | None = None) -> DecoderContext:
        """The decoder's KV cache of each row's context (`contexts`, or `rows` rows of `<s>` alone for a
        decoder that reads no context), ready to decode blocks in order (`DecoderContext.decode`)."""
        self._check_contexts(contexts, len(contexts) if contexts is not None else rows)
        return DecoderContext(self, list(contexts) if contexts is not None else [""] * rows)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, contexts: Sequence[str] | None = None, max_tokens: int | None = None) -> list[str]:
        """Greedy, batched decoding of latents (N, L_b, d_z) to sentences (`contexts`: each latent's
        context text, for a context-conditioned decoder)."""
        self._check_contexts(contexts, z.size(0))
        return self.read_contexts(contexts, z.size(0)).decode(z, max_tokens=max_tokens)


class DecoderContext:
    """What the VAE decoder has read before each row's next block, held in its KV cache across blocks.

    Row i's context is `<s> context_i` (`decoder_context`; else `<s>` alone). Rows with one context
    (the k trajectories of a question) read it once and share its keys/values. Attention is causal,
    so a context's keys/values depend on the context alone: after a block is decoded, its sentence
    joins the row's context (`reasoning_context`) and only the sentence's tokens are read, in the
    same pass as the next block's latents. The latents and the tokens written after them are no
    context: the sentence is written on a fork of the cache (`write_tokens`, which drops rows that
    finish, as AR sampling does) and the context's cache is cropped back to before the latents.
    Padding is masked and positions count each row's own tokens (`CachedSequence`), so a row
    decodes as it would alone, from scratch.
    """

    def __init__(self, vae: SentenceVAE, contexts: list[str]):
        self.vae = vae
        self.texts = contexts
        self.ids = [vae.context_ids(c) for c in contexts]  # each row's whole context
        self.rows = list(range(len(contexts)))  # the original row of each row held in `seq`
        self.read = [len(i) for i in self.ids]  # tokens of each row's context in the cache; the rest are pending
        distinct = list(dict.fromkeys(map(tuple, self.ids)))
        self.seq = CachedSequence(vae.decoder, len(distinct), vae.device)
        if not distinct:
            return
        ids, valid = pad_ids(distinct, vae.tokenizer.pad_token_id, left=True, device=vae.device)
        self.seq.append(input_ids=ids, mask=valid.long(), all_logits=False)
        if len(distinct) < len(contexts):
            self.seq.select(torch.tensor([distinct.index(tuple(i)) for i in self.ids], device=vae.device))

    def keep(self, rows: list[int]) -> None:
        """Hold only `rows` (original indices, in order), e.g. the trajectories still reasoning: the
        others are released for good."""
        if rows != self.rows:
            self.seq.select(self._positions(rows))
            self.rows = rows

    def _positions(self, rows: Sequence[int]) -> torch.Tensor:
        """Where the given original rows are held in `seq`."""
        missing = set(rows) - set(self.rows)
        if missing:
            raise ValueError(f"rows {sorted(missing)} were released from the decoder's contexts")
        return torch.tensor([self.rows.index(r) for r in rows], dtype=torch.long, device=self.vae.device)

    def _extend(self, row: int, sentence: str) -> None:
        """Row `row`'s context continues with `sentence`: its tokens are pending until the next block.
        Where the longer text tokenises differently before its end (a subword tokenizer merging
        across the boundary), the cached tokens from the first difference on are masked out."""
        text = reasoning_context(self.texts[row], [sentence])
        ids, old = self.vae.context_ids(text), self.ids[row]
        same = next((j for j, (a, b) in enumerate(zip(ids, old)) if a != b), min(len(ids), len(old)))
        if same < self.read[row]:
            at = self.rows.index(row)
            columns = self.seq.mask[at].nonzero().squeeze(1)
            self.seq.mask[at, columns[same:]] = 0
            self.seq.length[at] = same
            self.read[row] = same
        self.texts[row], self.ids[row] = text, ids

    @torch.no_grad()
    def decode(self, z: torch.Tensor, rows: Sequence[int] | None = None, max_tokens: int | None = None) -> list[str]:
        """Greedy decoding of one block per row (z: (len(rows), L_b, d_z); `rows`: original row indices,
        default all held), each after its context; with `decoder_context` the sentences then join the
        contexts. Held rows not in `rows` are carried along masked, their contexts unchanged (`keep`
        releases them instead)."""
        vae, seq = self.vae, self.seq
        rows = list(self.rows if rows is None else rows)
        if not rows:
            return []
        at = self._positions(rows)
        chosen = torch.zeros(len(self.rows), dtype=torch.bool, device=z.device)
        chosen[at] = True
        wanted = set(rows)
        pending, valid = pad_ids([self.ids[r][self.read[r]:] if r in wanted else [] for r in self.rows],
                                 vae.tokenizer.pad_token_id, left=True, device=z.device)
        embedded = vae.latent_embeddings(z)
        latents = embedded.new_zeros(len(self.rows), *embedded.shape[1:])  # rows not decoded: masked
        latents[at] = embedded
        context_width = seq.mask.size(1) + pending.size(1)
        # one pass reads the sentences that joined the contexts and the latents after them
        embeds = torch.cat([vae.decoder.get_input_embeddings()(pending), latents], dim=1)
        mask = torch.cat([valid, chosen[:, None].expand(-1, z.size(1))], dim=1).long()
        logits = seq.append(inputs_embeds=embeds, mask=mask, all_logits=False).logits[:, -1]
        for r in rows:
            self.read[r] = len(self.ids[r])
        # the sentences are written on a fork; the contexts keep what precedes the latents
        writer = seq.fork()
        if rows != self.rows:  # only some rows decode this block
            writer.select(at)
            logits = logits[at]
        seq.crop(context_width)
        written = write_tokens(writer, logits, None, 0.0, 1.0, max_tokens or vae.max_sentence_tokens,
                               [vae.tokenizer.eos_token_id])
        texts = [vae.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in written]
        if vae.decoder_context:
            for r, text in zip(rows, texts, strict=True):
                self._extend(r, text)
        return texts


# ----------------------------------------------------------------------------------- latent statistics
@dataclass
class LatentStats:
    """Per-coordinate mean/std of mu over training sentences, (L_b, d_z) each; maps latents to ~unit scale."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def identity(cls, latent_tokens: int, latent_dim: int) -> LatentStats:
        """Mean 0, std 1: the statistics of an untrained VAE (`Method.load_untrained`)."""
        return cls(torch.zeros(latent_tokens, latent_dim), torch.ones(latent_tokens, latent_dim))

    def normalize(self, mu: torch.Tensor) -> torch.Tensor:
        return (mu - self.mean.to(mu)) / self.std.to(mu)

    def denormalize(self, z: torch.Tensor) -> torch.Tensor:
        return z * self.std.to(z) + self.mean.to(z)

    def save(self, path: Path) -> None:
        save_file({"mean": self.mean.cpu().contiguous(), "std": self.std.cpu().contiguous()}, str(path))

    @classmethod
    def load(cls, path: Path) -> LatentStats:
        tensors = load_file(str(path))
        return cls(tensors["mean"], tensors["std"])

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(),
                "mean_abs_mean": float(self.mean.abs().mean()), "mean_std": float(self.std.mean())}


TABLE_MIN_EPOCHS = 2.0  # tabulate a frozen encoder's latents when training draws each problem this often


def tabulate_latents(problems: list[Problem], encode: Callable[[list[Problem]], Sequence[torch.Tensor]],
                     train: TrainConfig, min_epochs: float) -> dict[str, torch.Tensor] | None:
    """A frozen encoder's latents of every training problem by task_id, encoded once before a phase
    that draws `train.steps` batches of `train.batch_size` problems, when it draws each at least
    `min_epochs` times (else None): the encoder's forward pass is then paid once, not every epoch.
    `encode` runs over all the problems in one fixed order, so every call gives the same table and a
    resumed run stays bitwise the uninterrupted one."""
    if train.steps * train.batch_size < min_epochs * len(problems):
        return None
    with torch.no_grad():
        latents = encode(problems)
    return {problem["task_id"]: z for problem, z in zip(problems, latents, strict=True)}


def looked_up(table: dict[str, torch.Tensor] | None, problems: list[Problem]) -> list[torch.Tensor] | None:
    """The problems' latents from a `tabulate_latents` table, None unless it holds every one."""
    if table is None or not all(problem["task_id"] in table for problem in problems):
        return None
    return [table[problem["task_id"]] for problem in problems]


@torch.no_grad()
def encode_means(vae: SentenceVAE, pairs: Sequence[SentencePair], batch_size: int = 256,
                 sample: bool = False) -> torch.Tensor:
    """mu for each (question, sentence), (N, L_b, d_z): the deterministic block latent; with `sample`,
    a draw mu + sigma eps from the posterior instead."""
    chunks = []
    for i in range(0, len(pairs), batch_size):
        mu, logvar = vae.encode(pairs[i : i + batch_size])
        chunks.append(mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if sample else mu)
    return torch.cat(chunks) if chunks else torch.empty(0, vae.latent_tokens, vae.latent_dim, device=vae.device)


@torch.no_grad()
def latent_statistics(vae: SentenceVAE, pairs: Sequence[SentencePair], batch_size: int = 256) -> LatentStats:
    mu = encode_means(vae, pairs, batch_size)
    return LatentStats(mu.mean(0).cpu(), mu.std(0).clamp_min(1e-4).cpu())


@torch.no_grad()
def reconstruction_exact_match(vae: SentenceVAE, pairs: Sequence[SentencePair], batch_size: int = 256) -> dict:
    """Held-out reconstruction: encode (mu), decode greedily, compare the text exactly."""
    was_training = vae.training
    vae.eval()
    hits, examples = 0, []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        decoded = vae.decode(encode_means(vae, chunk, batch_size), [c for c, _ in chunk])
        for (_, sentence), text in zip(chunk, decoded, strict=True):
            hits += text == sentence.strip()
            if text != sentence.strip() and len(examples) < 5:
                examples.append({"sentence": sentence, "decoded": text})
    vae.train(was_training)
    return {"exact_match": hits / max(1, len(pairs)), "n_sentences": len(pairs), "mismatches": examples}


def write_report(path: Path, report: dict) -> None:
    path.write_text(json.dumps(report, indent=2) + "\n")


def decoder_is_trained(choice: str, from_scratch: bool) -> bool:
    """`vae_decoder`: "frozen" (the paper), "trainable", or "auto" (trained for a from-scratch backbone)."""
    return choice == "trainable" or (choice == "auto" and from_scratch)


STATS_FILE, REPORT_FILE = "latent_stats.safetensors", "report.json"
SOURCE_FILE = "trained_by.json"  # in a shared VAE phase: the run that trained it


def finished_vae_phase(method, phase: str, shared: Path | None = None, recipe: int | None = None) -> Path | None:
    """The VAE phase's final checkpoint once it is trained and its report written (`finish_vae_phase`),
    else None (a run killed between the two redoes the report).

    `shared`: where runs whose VAE is the same (same base, data, settings) keep one finished copy. A
    finished phase is published there; a run that has not started its own adopts it (hard links),
    so a grid that varies only what comes after the VAE trains it once. Only a VAE whose report records
    `recipe` (the code that trained it, `finish_vae_phase`) is published."""
    directory = method.ctx.run_dir / phase

    def finished(folder: Path) -> bool:
        return phase_done(folder) and (folder / REPORT_FILE).is_file()

    if shared is not None and distributed.is_main_process():
        if finished(directory) and json.loads((directory / REPORT_FILE).read_text()).get("recipe") == recipe:
            shared.parent.mkdir(parents=True, exist_ok=True)
            link_phase(directory, shared, {SOURCE_FILE: json.dumps({"run": method.ctx.run_dir.name}) + "\n"})
        elif finished(shared) and not directory.exists() and link_phase(shared, directory):
            console.print(f"VAE phase: the finished one of {shared} (same base, data and settings), not retrained")
    if shared is not None:
        distributed.barrier()
    return method.finished(phase) if finished(directory) else None


def finish_vae_phase(vae: SentenceVAE, directory: Path, stats_pairs: Sequence[SentencePair],
                     held_out: dict[str, Any], recipe: int | None = None) -> None:
    """After the VAE phase: latent statistics of the training texts and the held-out reconstruction
    exact-match (`held_out`: {"split", "pairs"}) in the phase folder, once; `recipe` is recorded."""
    if (directory / REPORT_FILE).is_file():
        return
    if distributed.is_main_process():  # one writer; the other processes of a launch read its files
        vae.eval()
        stats = latent_statistics(vae, stats_pairs)
        stats.save(directory / STATS_FILE)
        reconstruction = {"split": held_out["split"], **reconstruction_exact_match(vae, held_out["pairs"])}
        write_report(directory / REPORT_FILE, {"reconstruction": reconstruction, "latent_stats": stats.to_json(),
                                               **({"recipe": recipe} if recipe is not None else {})})
    distributed.barrier()
