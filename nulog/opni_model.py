"""Opni's NuLog model ("opnilog"), module for module, so that its state dict and optimizer state load into Opni's
inference service; trained and run here by the one-pass masked prediction.

Sources, in rancher/opni-inference-service (tree `opni_inference_service/`; /work/notes/opni_facts.md §8):
the classes of `models/opnilog/opnilog_model.py`@6d10c147ae8587248bc4851a876675a4386faa98, `make_model`,
`save_model`, `load_model`, `predict` and `run_test` of `models/opnilog/opnilog_parser.py`@
f75ef4c8a16998686e1124566805ae0dccb40981.

The layout is an `EncoderDecoder` of the Annotated Transformer: one post-norm encoder layer (`norm(x +
dropout(sublayer(x)))` with Opni's own LayerNorm: unbiased std, eps added to it) and a final norm, a decoder
and target embedding that are built and saved but never run, sinusoidal positions in a `pe` buffer of 64, and
the prediction read at `<CLS>` through `generator.proj`. The attribute names below make the 52 state-dict
keys Opni's; the registration order makes `parameters()` Opni's, so the state of an Adam over them loads into
Opni's `Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999), weight_decay=0.005)`.

Opni predicts each token of a line from a copy of the line with that token masked, one full pass per copy
(`copies_logits`). With one layer, the prediction read at `<CLS>` sees a masked variant only through the one
key/value pair of the masked position; the `<CLS>` query itself never changes. So `masked_hidden` computes
all variants of a line in one pass, exactly: row i of the attention matrix is variant i, whose entry for key
i is swapped for the `<MASK>` term (a test checks it against the copies).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from nulog.config import OpniConfig, TrainConfig
from nulog.opni_encoder import CLS_ID, MASK_ID, PAD_ID

# Opni's training and scoring settings (parser `train`, `LogParser(k=50)`, const.py's threshold).
LR = 0.001
BETAS = (0.9, 0.999)
WEIGHT_DECAY = 0.005
EPOCHS = 3
BATCH_SIZE = 32
K = 50
THRESHOLD = 0.7


class LayerNorm(nn.Module):
    """Opni's layer norm: `a_2 * (x - mean) / (std + eps) + b_2`, with the unbiased std."""

    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class Residual(nn.Module):
    """Opni's SublayerConnection, post-norm: `norm(x + dropout(y))` for a sublayer's output y."""

    def __init__(self, size: int, dropout: float) -> None:
        super().__init__()
        self.norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.dropout(y))


class Attention(nn.Module):
    """Opni's MultiHeadedAttention: q, k, v and output projections in `linears.0..3`, dropout on the weights."""

    def __init__(self, h: int, d_model: int, dropout: float = 0.1) -> None:
        super().__init__()
        assert d_model % h == 0
        self.h, self.d_k = h, d_model // h
        self.linears = nn.ModuleList(nn.Linear(d_model, d_model) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def split(self, x: torch.Tensor, i: int) -> torch.Tensor:
        """Projection i of x (..., T, C) in heads: (..., H, T, D)."""
        y = self.linears[i](x)
        return y.view(*y.shape[:-1], self.h, self.d_k).transpose(-2, -3)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Self-attention of x (B, T, C) over the keys where keep (B, T) holds."""
        q, k, v = (self.split(x, i) for i in range(3))  # (B, H, T, D)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.d_k)
        scores = scores.masked_fill(~keep[:, None, None, :], -1e9)  # Opni's mask value
        p = self.dropout(F.softmax(scores, dim=-1))
        return self.linears[3]((p @ v).transpose(1, 2).flatten(-2))


class FeedForward(nn.Module):
    """`w_2(dropout(relu(w_1(x))))`."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, c: OpniConfig) -> None:
        super().__init__()
        self.self_attn = Attention(c.n_heads, c.d_model)  # make_model leaves its dropout at 0.1
        self.feed_forward = FeedForward(c.d_model, c.d_ff, c.dropout)
        self.sublayer = nn.ModuleList(Residual(c.d_model, c.dropout) for _ in range(2))
        self.size = c.d_model

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = self.sublayer[0](x, self.self_attn(x, keep))
        return self.sublayer[1](x, self.feed_forward(x))


class Encoder(nn.Module):
    def __init__(self, c: OpniConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer(c) for _ in range(c.n_layers))
        self.norm = LayerNorm(c.d_model)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, keep)
        return self.norm(x)


class DecoderLayer(nn.Module):
    """Built and saved because Opni's layout has it; never run."""

    def __init__(self, c: OpniConfig) -> None:
        super().__init__()
        self.size = c.d_model
        self.self_attn = Attention(c.n_heads, c.d_model)
        self.src_attn = Attention(c.n_heads, c.d_model)
        self.feed_forward = FeedForward(c.d_model, c.d_ff, c.dropout)
        self.sublayer = nn.ModuleList(Residual(c.d_model, c.dropout) for _ in range(3))


class Decoder(nn.Module):
    def __init__(self, c: OpniConfig) -> None:
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer(c) for _ in range(c.n_layers))
        self.norm = LayerNorm(c.d_model)


class Embeddings(nn.Module):
    def __init__(self, d_model: int, vocab: int) -> None:
        super().__init__()
        self.lut = nn.Embedding(vocab, d_model)
        self.d_model = d_model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lut(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    """Sinusoidal positions, added, then dropout; the table is the persistent buffer `pe` (1, max_len, C)."""

    def __init__(self, d_model: int, dropout: float, max_len: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        position = torch.arange(0, max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * -(math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x + self.pe[:, : x.size(1)])


class Generator(nn.Module):
    """The output layer, read at the `<CLS>` position."""

    def __init__(self, d_model: int, vocab: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_model, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x[:, 0, :])


class OpniNuLog(nn.Module):
    """Opni's EncoderDecoder, trained and run here on its encoder alone, as Opni runs it."""

    def __init__(self, config: OpniConfig) -> None:
        super().__init__()
        c = self.config = config
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        self.src_embed = nn.Sequential(Embeddings(c.d_model, c.vocab_size), PositionalEncoding(c.d_model, c.dropout, c.max_len))
        self.tgt_embed = nn.Sequential(Embeddings(c.d_model, c.vocab_size), PositionalEncoding(c.d_model, c.dropout, c.max_len))
        self.generator = Generator(c.d_model, c.vocab_size)
        for p in self.parameters():  # make_model: Glorot on every matrix
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    # -- the one-pass masked prediction --

    def masked_hidden(self, idx: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """The encoder's output at `<CLS>` (P, C) for each selected position (select (B, T) bool, row-major
        order), from the variant of its line with that position masked; all variants in one pass.

        idx (B, T): `<CLS>` then the line's ids, `<PAD>` after its end.
        """
        B, T = idx.shape
        assert T <= self.config.max_len, f"sequence of {T} positions exceeds max_len {self.config.max_len}"
        assert not select[:, 0].any(), "<CLS> is never masked"
        layer = self.encoder.layers[0]
        attn = layer.self_attn
        emb, positions = self.src_embed[0], self.src_embed[1]
        x = positions(emb(idx))  # (B, T, C), dropout in training
        m = emb.lut.weight[MASK_ID] * math.sqrt(emb.d_model) + positions.pe[:, :T]  # (1, T, C): <MASK> at each position
        if self.training:
            m = positions.dropout(m.expand(B, T, -1))  # each line's masked inputs get dropout of their own
        x0 = x[:, :1]  # (B, 1, C): <CLS>, the query of every variant
        q0 = attn.split(x0, 0)  # (B, H, 1, D)
        k, v = attn.split(x, 1), attn.split(x, 2)  # (B, H, T, D)
        km, vm = attn.split(m, 1), attn.split(m, 2)  # (1 or B, H, T, D)
        scale = 1.0 / math.sqrt(attn.d_k)
        H = attn.h
        scores = (q0 @ k.transpose(-2, -1) * scale).expand(B, H, T, T).clone()  # (B, H, T, T): row i = variant i
        scores.diagonal(dim1=-2, dim2=-1).copy_(((q0 * km).sum(-1) * scale).expand(B, H, T))  # key i is <MASK>'s
        scores.masked_fill_((idx == PAD_ID)[:, None, None, :], -1e9)
        p = attn.dropout(F.softmax(scores, dim=-1))  # (B, H, T, T)
        pii = p.diagonal(dim1=-2, dim2=-1)  # (B, H, T)
        y = p @ v + pii.unsqueeze(-1) * (vm - v)  # (B, H, T, D): value i swapped for <MASK>'s
        y = y.transpose(1, 2)[select]  # (P, H, D): only the variants asked for go on
        a = attn.linears[3](y.flatten(-2))  # (P, C)
        base = x0.expand(B, T, -1)[select]  # (P, C): the residual is <CLS>'s input in every variant
        h = layer.sublayer[0](base, a)
        h = layer.sublayer[1](h, layer.feed_forward(h))
        return self.encoder.norm(h)

    def masked_logits(self, idx: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """Logits (P, V) of the selected positions, each predicted with only that position masked."""
        return self.generator.proj(self.masked_hidden(idx, select))

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, weights: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (P, V) of every predicted position (targets >= 0; without targets, every position of a line
        but `<CLS>`), each made with only that position masked; the loss is their mean cross-entropy, or with
        weights (B, T) the weighted sum."""
        select = (targets >= 0) if targets is not None else (idx != PAD_ID) & (idx != CLS_ID)
        logits = self.masked_logits(idx, select)
        if targets is None:
            return logits, None
        ce = F.cross_entropy(logits.float(), targets[select], reduction="none")
        loss = ce.mean() if weights is None else (ce * weights[select]).sum()
        return logits, loss

    # -- the literal method, as Opni's `predict` runs it --

    def copies_logits(self, idx: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
        """One masked copy of the line per selected position, each a full pass of the encoder. (P, V)"""
        rows, cols = select.nonzero(as_tuple=True)
        out = []
        for s in range(0, rows.numel(), 256):
            r, c = rows[s : s + 256], cols[s : s + 256]
            copies = idx[r].clone()
            copies[torch.arange(r.numel(), device=idx.device), c] = MASK_ID
            out.append(self.generator(self.encoder(self.src_embed(copies), copies != PAD_ID)))
        if not out:
            return self.generator.proj.weight.new_zeros((0, self.config.vocab_size))
        return torch.cat(out)

    @torch.inference_mode()
    def topk_hits(self, idx: torch.Tensor, select: torch.Tensor, k: int) -> torch.Tensor:
        """(P,) bool: is the true token of each selected position among the top k? An unseen word (`<UNK>`)
        is a label like any other, as in Opni's scoring."""
        logits = self.masked_logits(idx, select).float()
        true = idx[select]
        return (logits > logits.gather(1, true[:, None])).sum(-1) < k

    # -- training --

    def trained_parameters(self) -> list[nn.Parameter]:
        """The parameters a training step gives a gradient: all but the decoder's and the target embedding's."""
        unused = {id(p) for m in (self.decoder, self.tgt_embed) for p in m.parameters()}
        return [p for p in self.parameters() if id(p) not in unused]

    def configure_optimizer(self, config: TrainConfig) -> torch.optim.Adam:
        """Opni's optimizer: Adam over all parameters in module order, with L2 weight decay; the fused kernel
        (the same update) is three times faster on CPU than the one that allocates its temporaries."""
        return torch.optim.Adam(self.parameters(), lr=config.lr, betas=BETAS, weight_decay=config.weight_decay,
                                fused=True)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def save_opni_checkpoint(path: str | Path, model: OpniNuLog, optimizer_state: dict[str, Any] | None, *,
                         epoch: int, loss: float, lr: float = LR) -> None:
    """Opni's `save_model`: `{epoch, model_state_dict, optimizer_state_dict, loss}`, tensors on CPU.

    The optimizer state's learning rate is Opni's (the schedule here ends elsewhere), so an Opni trainer that
    warm-starts from this file goes on as its own would. The state holds the parameters that were trained;
    the decoder's and the target embedding's never get a gradient, in Opni's training as here."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if optimizer_state is None:
        optimizer_state = model.configure_optimizer(TrainConfig(lr=lr, weight_decay=WEIGHT_DECAY)).state_dict()
    optimizer_state = {
        "state": {i: {n: t.detach().cpu() if torch.is_tensor(t) else t for n, t in s.items()}
                  for i, s in optimizer_state["state"].items()},
        # Opni's own Adam, as its constructor sets the group: its learning rate, no fused or foreach kernel
        # (an older torch refuses a fused one on CPU).
        "param_groups": [{**g, "lr": lr, "fused": None, "foreach": None} for g in optimizer_state["param_groups"]],
    }
    torch.save({"epoch": epoch, "model_state_dict": state, "optimizer_state_dict": optimizer_state, "loss": loss}, path)


def is_opni_checkpoint(blob: object) -> bool:
    return isinstance(blob, dict) and "model_state_dict" in blob and "optimizer_state_dict" in blob


def model_from_opni_state(state: dict[str, torch.Tensor]) -> OpniNuLog:
    """Opni's model with these weights (vocabulary size and maximum length from their shapes)."""
    vocab, d_model = state["src_embed.0.lut.weight"].shape
    config = OpniConfig(vocab_size=vocab, d_model=d_model, d_ff=state["encoder.layers.0.feed_forward.w_1.weight"].shape[0],
                        max_len=state["src_embed.1.pe"].shape[1])
    model = OpniNuLog(config)
    model.load_state_dict(state)
    return model
