"""The NuLog model: a small transformer encoder that predicts each token of a line with that token masked.

Every predicted token of a line is masked in turn and predicted from the rest. Done literally that is L
copies of an L-token line, each a full O(L^2) pass (`copies_logits`). With one encoder layer (NuLog's
default) the L variants differ only in one key/value pair (and, for the "mask" readout, in the query that
reads the prediction), so `Block.masked` computes all of them in one pass, exactly: each row of the
attention matrix is one variant, whose diagonal entry is swapped for the `<MASK>` term. Deeper models take
the literal path; a test checks both agree at one layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nulog.config import ModelConfig, TrainConfig
from nulog.optim import AdamW
from nulog.tokenizer import MASK_ID, PAD_ID, UNK_ID


class SelfAttention(nn.Module):
    """Multi-head self-attention over the real (non-pad) tokens of each line."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        # No dropout on the attention matrix: it cost a quarter of training time and no accuracy on LogHub.
        self.resid_drop = nn.Dropout(config.dropout)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of x (B, T, C), each (B, H, T, C/H)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        return tuple(t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """(..., H, C/H) -> projected (..., C)."""
        return self.resid_drop(self.proj(y.flatten(-2)))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(x)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])  # (B, H, T, D)
        return self.merge(y.transpose(1, 2))


class MLP(nn.Module):
    """Position-wise feed-forward layer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff)
        self.out = nn.Linear(config.d_ff, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer encoder layer."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), keep)
        return x + self.mlp(self.ln2(x))

    def keys_values(self, x: torch.Tensor) -> torch.Tensor:
        """Keys and values of x (..., C), side by side: (..., 2C)."""
        C = x.shape[-1]
        return F.linear(self.ln1(x), self.attn.qkv.weight[C:], self.attn.qkv.bias[C:])

    def masked(
        self,
        kv: torch.Tensor,
        x0: torch.Tensor,
        m: torch.Tensor,
        keep: torch.Tensor,
        *,
        readout: str,
        select: torch.Tensor | None,
    ) -> torch.Tensor:
        """For every position i, this block's output for the variant of a line whose position i holds m[i],
        read at i ("mask") or at <CLS> ("cls"); all variants in one pass. kv (B, T, 2C): the keys and values
        of the line's inputs (`keys_values`), x0 (B, 1, C): its input at <CLS>, m (1, T, C), keep (B, T).
        With select (B, T) bool, only those rows: (P, C); else (B, T, C)."""
        B, T, C2 = kv.shape
        C, H = C2 // 2, self.attn.n_heads
        k, v = kv.view(B, T, 2, H, C // H).permute(2, 0, 3, 1, 4)  # (B, H, T, D) each
        qm, km, vm = self.attn.heads(self.ln1(m))  # (1, H, T, D)
        scale = 1.0 / math.sqrt(C // H)
        if readout == "mask":
            query = qm  # (1, H, T, D): variant i is read at position i, where m now sits
            base = m  # (1, T, C): residual of the reading position
        else:
            w, b = self.attn.qkv.weight, self.attn.qkv.bias
            q0 = F.linear(self.ln1(x0), w[:C], b[:C]).view(B, 1, H, C // H).transpose(1, 2)  # (B, H, 1, D)
            query = q0.expand(B, H, T, C // H)  # variant i is read at <CLS>, untouched by the mask
            base = x0  # (B, 1, C)
        scores = torch.matmul(query * scale, k.transpose(-2, -1))  # (B, H, T, T): row i = variant i, column j = key j
        scores.diagonal(dim1=-2, dim2=-1).copy_(((query * km).sum(-1) * scale).expand(B, H, T))  # key i: m's
        scores.masked_fill_(~keep[:, None, None, :], float("-inf"))
        p = F.softmax(scores, dim=-1)  # (B, H, T, T)
        # value i swapped for m's: (B, T, H, D), and only the rows asked for go on
        y, pii, v, vm = ((p @ v).transpose(1, 2), p.diagonal(dim1=-2, dim2=-1).transpose(1, 2),
                         v.transpose(1, 2), vm.transpose(1, 2).expand(B, T, H, C // H))
        base = base.expand(B, T, C)
        if select is not None:
            y, pii, v, vm, base = y[select], pii[select], v[select], vm[select], base[select]  # (P, ...)
        y = base + self.attn.merge(y + pii.unsqueeze(-1) * (vm - v))  # (B, T, C) or (P, C)
        return y + self.mlp(self.ln2(y))


class NuLog(nn.Module):
    """Masked-token transformer encoder over log tokens."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.max_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # tied: predicting a token and reading it share one table
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) at every position, each made with only that position masked.

        idx (B, T): `<CLS>` then the line's ids, `<PAD>` after its end. targets (B, T): the id to predict,
        -1 where nothing is predicted; the loss is their mean cross-entropy, or with weights (B, T) the
        weighted sum. Nothing is read back to the host (no sync on CUDA).
        """
        B, T = idx.shape
        assert T <= self.config.max_len, f"sequence of {T} positions exceeds max_len {self.config.max_len}"
        if self.config.n_layers == 1:
            logits = self.head(self.ln_f(self._one_pass(idx, None)))  # (B, T, V)
        else:
            real = idx != PAD_ID
            logits = self.head.weight.new_zeros((B, T, self.config.vocab_size))
            logits[real] = self.copies_logits(idx, real)
        if targets is None:
            return logits, None
        ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1, reduction="none")
        if weights is None:
            loss = ce.sum() / (targets >= 0).sum().clamp(min=1)
        else:
            loss = (ce * weights.flatten()).sum()
        return logits, loss

    def masked_logits(self, idx: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """Logits (P, V) of the selected positions (select (B, T) bool, row-major order), each predicted with
        only that position masked; the one-layer model computes the MLP and output layer for those rows only."""
        if self.config.n_layers > 1:
            return self.copies_logits(idx, select)
        return self.head(self.ln_f(self._one_pass(idx, select)))

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)

    def _one_pass(self, idx: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor:
        B, T = idx.shape
        block = self.blocks[0]
        pos = torch.arange(T, device=idx.device)
        # <MASK> at every position, the same for every line (no dropout), so computed once: (1, T, C)
        m = self.tok_emb.weight[MASK_ID] + self.pos_emb(pos)[None]
        if self.training:
            x = self._embed(idx)  # (B, T, C)
            kv, x0 = block.keys_values(x), x[:, :1]
        else:
            # Without dropout a token has the same key and value at a position in every line: each distinct
            # (token, position) is computed once (100k sample-log lines: 31k positions, 1.6k distinct).
            pairs, where = torch.unique(idx * T + pos, return_inverse=True)  # (U,), (B, T)
            x = self.tok_emb(pairs // T) + self.pos_emb(pairs % T)  # (U, C)
            kv, x0 = block.keys_values(x)[where], x[where[:, :1]]  # (B, T, 2C), (B, 1, C)
        return block.masked(kv, x0, m, idx != PAD_ID, readout=self.config.readout, select=select)

    def copies_logits(self, idx: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """The literal method: one masked copy of the line per selected position, each a full pass. (P, V)"""
        B, T = idx.shape
        rows, cols = select.nonzero(as_tuple=True)  # (P,), (P,)
        chunk = max(1, 4_000_000 // (T * self.config.d_model))
        out = []
        for s in range(0, rows.numel(), chunk):
            r, c = rows[s : s + chunk], cols[s : s + chunk]
            copies = idx[r].clone()  # (p, T)
            n = torch.arange(r.numel(), device=idx.device)
            copies[n, c] = MASK_ID
            keep = copies != PAD_ID
            x = self._embed(copies)
            for block in self.blocks:
                x = block(x, keep)
            x = x[n, c if self.config.readout == "mask" else torch.zeros_like(c)]  # (p, C)
            out.append(self.head(self.ln_f(x)))
        if not out:
            return self.head.weight.new_zeros((0, self.config.vocab_size))
        return torch.cat(out)  # (P, V)

    @torch.inference_mode()
    def topk_hits(self, idx: torch.Tensor, select: torch.Tensor, k: int) -> torch.Tensor:
        """(P,) bool: is the true token of each selected position among the model's top-k predictions?"""
        logits = self.masked_logits(idx, select).float()  # (P, V)
        true = idx[select]  # (P,)
        rank = (logits > logits.gather(1, true[:, None])).sum(-1)  # (P,): how many tokens the model prefers
        return (rank < k) & (true != UNK_ID)

    def num_params(self) -> int:
        """Parameter count (the tied output layer counted once)."""
        return sum(p.numel() for p in self.parameters())

    def trained_parameters(self) -> list[nn.Parameter]:
        """The parameters a training step gives a gradient: all of them."""
        return list(self.parameters())

    def configure_optimizer(self, config: TrainConfig) -> AdamW:
        """AdamW, with weight decay on matrices and embeddings only."""
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-9)
