"""The NuLog model: a small transformer encoder that predicts each token of a line with that token masked.

Every digit-free token of a line is masked in turn and predicted from the rest. Done literally that is L
copies of an L-token line, each a full O(L^2) pass. With one encoder layer (NuLog's default) the L variants
differ only in one key/value pair (and, for the "mask" readout, in the query that reads the prediction), so
`_fast_logits` computes all of them in one pass, exactly: each row of the attention matrix is one variant,
whose diagonal entry is swapped for the `<MASK>` term. `_reference_logits` is the literal method; it serves
deeper models and the test that checks both agree.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from nulog.config import NuLogConfig
from nulog.tokenizer import MASK_ID, PAD_ID, UNK_ID


class SelfAttention(nn.Module):
    """Multi-head self-attention over the real (non-pad) tokens of each line."""

    def __init__(self, config: NuLogConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.d_model = config.d_model
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.attn_drop = nn.Dropout(config.dropout)
        self.resid_drop = nn.Dropout(config.dropout)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v of x (B, T, C), each (B, H, T, C/H)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        return tuple(t.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2) for t in (q, k, v))

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """(B, H, T, C/H) -> projected (B, T, C)."""
        B, H, T, D = y.shape
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, T, H * D)))

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(x)  # (B, H, T, D)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keep[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return self.merge(y)


class MLP(nn.Module):
    """Position-wise feed-forward layer."""

    def __init__(self, config: NuLogConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.d_ff)
        self.out = nn.Linear(config.d_ff, config.d_model)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.out(F.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-norm transformer encoder layer."""

    def __init__(self, config: NuLogConfig) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(config.d_model)
        self.attn = SelfAttention(config)
        self.ln2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), keep)
        return x + self.mlp(self.ln2(x))


class NuLog(nn.Module):
    """Masked-token transformer encoder over log tokens."""

    def __init__(self, config: NuLogConfig) -> None:
        super().__init__()
        assert config.vocab_size > 0, "set config.vocab_size from the vocabulary first"
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
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        select: torch.Tensor | None = None,
        reference: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predictions for positions of idx, each made with only that position masked.

        idx (B, T): `<CLS>` then the line's ids, `<PAD>` after its end. targets (B, T): the id to predict,
        -1 where nothing is predicted. With select (B, T) bool, logits are (P, V), one row per selected
        position in row-major order. Without select, the one-layer path returns dense logits (B, T, V) and
        never reads a tensor back to the host (no sync on CUDA). reference=True takes the literal
        L-copies path, which always returns (P, V).
        """
        B, T = idx.shape
        assert T <= self.config.max_len, f"sequence of {T} positions exceeds max_len {self.config.max_len}"
        assert select is not None or targets is not None, "give targets or select"
        fast = self.config.n_layers == 1 and not reference
        if select is None and not fast:
            select = targets >= 0
        if fast:
            logits = self._fast_logits(idx, select)
        else:
            logits = self._reference_logits(idx, select)
        loss = None
        if targets is not None:
            if select is None:
                loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=-1)
            else:
                loss = F.cross_entropy(logits.float(), targets[select])
        return logits, loss

    def _embed(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.drop(self.tok_emb(idx) + self.pos_emb(pos))  # (B, T, C)

    def _fast_logits(self, idx: torch.Tensor, select: torch.Tensor | None) -> torch.Tensor:
        """All masked predictions of a one-layer model in one pass (row i of attention = variant i)."""
        B, T = idx.shape
        block = self.blocks[0]
        attn = block.attn
        keep = idx != PAD_ID  # (B, T)
        x = self._embed(idx)  # (B, T, C)
        # <MASK> at every position, the same for every line (no dropout), so computed once: (1, T, C)
        pos = torch.arange(T, device=idx.device)
        m = self.tok_emb.weight[MASK_ID] + self.pos_emb(pos)[None]
        q, k, v = attn.heads(block.ln1(x))  # (B, H, T, D)
        qm, km, vm = attn.heads(block.ln1(m))  # (1, H, T, D)
        scale = 1.0 / math.sqrt(q.shape[-1])
        if self.config.readout == "mask":
            query = qm.expand_as(q)  # variant i is read at position i, where <MASK> now sits
            base = m.expand_as(x)  # (B, T, C): residual of the reading position
        else:
            query = q[:, :, :1].expand_as(q)  # variant i is read at <CLS>, untouched by the mask
            base = x[:, :1].expand_as(x)
        scores = query @ k.transpose(-2, -1) * scale  # (B, H, T, T): row i = variant i, column j = key j
        diag = (query * km).sum(-1, keepdim=True) * scale  # (B, H, T, 1): key i replaced by <MASK>'s key
        eye = torch.eye(T, dtype=torch.bool, device=idx.device)
        scores = torch.where(eye, diag, scores)
        scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
        p = attn.attn_drop(F.softmax(scores, dim=-1))  # (B, H, T, T)
        y = p @ v + p.diagonal(dim1=-2, dim2=-1).unsqueeze(-1) * (vm - v)  # value i swapped for <MASK>'s
        y = base + attn.merge(y)  # (B, T, C)
        if select is not None:
            y = y[select]  # (P, C): only the rows asked for go through the MLP and the output layer
        y = y + block.mlp(block.ln2(y))
        return self.head(self.ln_f(y))  # (P, V) or (B, T, V)

    def _reference_logits(self, idx: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """The literal method: one masked copy of the line per selected position, each a full pass."""
        B, T = idx.shape
        rows, cols = select.nonzero(as_tuple=True)  # (P,), (P,)
        chunk = max(1, 4_000_000 // (T * self.config.d_model))
        out = []
        for s in range(0, rows.numel(), chunk):
            r, c = rows[s : s + chunk], cols[s : s + chunk]
            copies = idx[r].clone()  # (p, T)
            copies[torch.arange(r.numel(), device=idx.device), c] = MASK_ID
            keep = copies != PAD_ID
            x = self._embed(copies)
            for block in self.blocks:
                x = block(x, keep)
            at = c if self.config.readout == "mask" else torch.zeros_like(c)
            x = x[torch.arange(r.numel(), device=idx.device), at]  # (p, C)
            out.append(self.head(self.ln_f(x)))
        if not out:
            return self.head.weight.new_zeros((0, self.config.vocab_size))
        return torch.cat(out)  # (P, V)

    @torch.inference_mode()
    def topk_hits(self, idx: torch.Tensor, select: torch.Tensor, k: int) -> torch.Tensor:
        """(P,) bool: is the true token of each selected position among the model's top-k predictions?"""
        logits, _ = self(idx, select=select)
        logits = logits.float()
        true = idx[select]  # (P,)
        true_logit = logits.gather(1, true[:, None])  # (P, 1)
        rank = (logits > true_logit).sum(-1)  # (P,): how many tokens the model prefers
        return (rank < k) & (true != UNK_ID)

    def num_params(self) -> int:
        """Parameter count (the tied output layer counted once)."""
        return sum(p.numel() for p in self.parameters())
