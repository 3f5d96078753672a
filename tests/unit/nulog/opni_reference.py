"""Opni's NuLog loader and scorer, re-typed for the tests: what Opni's inference service does with the two files
it downloads from the models bucket (`nulog_model_latest.pt`, `vocab.txt`), step by step.

Re-typed (not imported: the service is not installable here) from rancher/opni-inference-service, tree
`opni_inference_service/`, as /work/notes/opni_facts.md §8 cites it:
- `models/opnilog/opnilog_tokenizer.py`@0b1cbd569d5da811b2b4bda5eb852a297cb2b639: `LogTokenizer` (`load_vocab`,
  `tokenize_data`, `tokenize`, `is_num_there`);
- `models/opnilog/opnilog_model.py`@6d10c147ae8587248bc4851a876675a4386faa98: `EncoderDecoder`, `Encoder`,
  `EncoderLayer`, `Decoder`, `DecoderLayer`, `LayerNorm`, `SublayerConnection`, `attention`,
  `MultiHeadedAttention`, `PositionwiseFeedForward`, `Embeddings`, `PositionalEncoding`, `Generator`, `Batch`,
  `MaskedDataset`;
- `models/opnilog/opnilog_parser.py`@f75ef4c8a16998686e1124566805ae0dccb40981: `LogParser.make_model`,
  `init_inference` (Adam, then `load_model`: optimizer state first, then the model's), `predict`, `run_test`,
  `do_mask`, `num_there`;
- `inference.py`@c78f2cb7e21c85b944cb4eb05fb32fdb6d05d4bf `init_model` (load_vocab, then init_inference) and
  `opnilog_predictor.py`@6ddff68464e000cdee54be32e9121ace185c65fe `predict` (one line at a time, k=50).

Only what inference runs is here (no training loop, no S3); the behaviour kept is the original's, the code
is shorter: the sampler of 32 lines per batch, the copies made one per masked position, the argsort.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# -- tokenizer (opnilog_tokenizer.py) -------------------------------------------------------------------


class LogTokenizer:
    def __init__(self, filepath: Path) -> None:
        self.filepath = filepath
        self.word2index: dict[str, int] = {}
        self.index2word: dict[int, str] = {}
        self.n_words = 10000
        self.valid_words = 5

    def load_vocab(self) -> None:
        self.word2index, self.index2word = {}, {}
        with open(self.filepath / "vocab.txt") as fin:
            self.n_words = int(fin.readline().rstrip())
            self.valid_words = int(fin.readline().rstrip())
            for idx, line in enumerate(fin):
                word_i = line.replace("\n", "")
                self.index2word[idx] = word_i
                self.word2index[word_i] = idx

    @staticmethod
    def is_num_there(s: str) -> bool:
        return sum(i.isdigit() for i in s) > 1

    def tokenize(self, sent: str) -> list[int]:
        valid_tokens = [t for t in sent.split(" ") if t is not None and t != ""]
        if len(valid_tokens) <= 1:
            valid_tokens.append("<EMPTY>")
        res = []
        for word in valid_tokens:
            if self.is_num_there(word):
                word = "<NUM>"
            res.append(self.word2index[word] if word in self.word2index else self.word2index["<UNK>"])
        return res

    def tokenize_data(self, input_text: list[str]) -> list[list[int]]:
        return [self.tokenize("<CLS> " + text.lower()) for text in input_text]


# -- model (opnilog_model.py) ---------------------------------------------------------------------------


def clones(module: nn.Module, N: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(N)])


class EncoderDecoder(nn.Module):
    def __init__(self, encoder, decoder, src_embed, tgt_embed, generator) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.src_embed = src_embed
        self.tgt_embed = tgt_embed
        self.generator = generator

    def forward(self, src, tgt, src_mask, tgt_mask):
        return self.encoder(self.src_embed(src), src_mask)


class Generator(nn.Module):
    def __init__(self, d_model: int, vocab: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.proj = nn.Linear(d_model, vocab)

    def forward(self, x):
        return self.proj(x[:, 0, :])


class LayerNorm(nn.Module):
    def __init__(self, features: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.a_2 = nn.Parameter(torch.ones(features))
        self.b_2 = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        std = x.std(-1, keepdim=True)
        return self.a_2 * (x - mean) / (std + self.eps) + self.b_2


class Encoder(nn.Module):
    def __init__(self, layer, N: int) -> None:
        super().__init__()
        self.layers = clones(layer, N)
        self.norm = LayerNorm(layer.size)

    def forward(self, x, mask):
        for layer in self.layers:
            x = layer(x, mask)
        return self.norm(x)


class SublayerConnection(nn.Module):
    def __init__(self, size: int, dropout: float) -> None:
        super().__init__()
        self.norm = LayerNorm(size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, sublayer):
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    def __init__(self, size: int, self_attn, feed_forward, dropout: float) -> None:
        super().__init__()
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout), 2)
        self.size = size

    def forward(self, x, mask):
        x = self.sublayer[0](x, lambda x: self.self_attn(x, x, x, mask))
        return self.sublayer[1](x, self.feed_forward)


class Decoder(nn.Module):
    def __init__(self, layer, N: int) -> None:
        super().__init__()
        self.layers = clones(layer, N)
        self.norm = LayerNorm(layer.size)


class DecoderLayer(nn.Module):
    def __init__(self, size: int, self_attn, src_attn, feed_forward, dropout: float) -> None:
        super().__init__()
        self.size = size
        self.self_attn = self_attn
        self.src_attn = src_attn
        self.feed_forward = feed_forward
        self.sublayer = clones(SublayerConnection(size, dropout), 3)


def attention(query, key, value, mask=None, dropout=None):
    d_k = query.size(-1)
    scores = torch.matmul(query, key.transpose(-2, -1)) / math.sqrt(d_k)
    if mask is not None:
        scores = scores.masked_fill(mask == 0, -1e9)
    p_attn = F.softmax(scores, dim=-1)
    if dropout is not None:
        p_attn = dropout(p_attn)
    return torch.matmul(p_attn, value), p_attn


class MultiHeadedAttention(nn.Module):
    def __init__(self, h: int, d_model: int, dropout: float = 0.1) -> None:
        super().__init__()
        assert d_model % h == 0
        self.d_k = d_model // h
        self.h = h
        self.linears = clones(nn.Linear(d_model, d_model), 4)
        self.attn = None
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, query, key, value, mask=None):
        if mask is not None:
            mask = mask.unsqueeze(1)
        nbatches = query.size(0)
        query, key, value = (
            lin(x).view(nbatches, -1, self.h, self.d_k).transpose(1, 2)
            for lin, x in zip(self.linears, (query, key, value), strict=False)
        )
        x, self.attn = attention(query, key, value, mask=mask, dropout=self.dropout)
        x = x.transpose(1, 2).contiguous().view(nbatches, -1, self.h * self.d_k)
        return self.linears[-1](x)


class PositionwiseFeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_model, d_ff)
        self.w_2 = nn.Linear(d_ff, d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class Embeddings(nn.Module):
    def __init__(self, d_model: int, vocab: int) -> None:
        super().__init__()
        self.lut = nn.Embedding(vocab, d_model)
        self.d_model = d_model

    def forward(self, x):
        return self.lut(x) * math.sqrt(self.d_model)


class PositionalEncoding(nn.Module):
    def __init__(self, d_model: int, dropout: float, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        pe = torch.zeros(max_len, d_model)
        position = torch.arange(0, max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * -(math.log(10000.0) / d_model))
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe.unsqueeze(0))

    def forward(self, x):
        return self.dropout(x + self.pe[:, : x.size(1)].detach())


def make_model(src_vocab, tgt_vocab, N=3, d_model=512, d_ff=2048, h=8, dropout=0.1, max_len=20) -> EncoderDecoder:
    c = copy.deepcopy
    attn = MultiHeadedAttention(h, d_model)
    ff = PositionwiseFeedForward(d_model, d_ff, dropout)
    position = PositionalEncoding(d_model, dropout, max_len)
    model = EncoderDecoder(
        Encoder(EncoderLayer(d_model, c(attn), c(ff), dropout), N),
        Decoder(DecoderLayer(d_model, c(attn), c(attn), c(ff), dropout), N),
        nn.Sequential(Embeddings(d_model, src_vocab), c(position)),
        nn.Sequential(Embeddings(d_model, tgt_vocab), c(position)),
        Generator(d_model, tgt_vocab),
    )
    for p in model.parameters():
        if p.dim() > 1:
            nn.init.xavier_uniform_(p)
    return model


# -- parser (opnilog_parser.py), inference only ---------------------------------------------------------


class LogParser:
    """`init_model(save_path)`: load_vocab, then `init_inference` with its defaults."""

    def __init__(self, save_path: Path, k: int = 50, model_name: str = "nulog_model_latest.pt") -> None:
        self.k = k
        self.pad_len = 64
        self.batch_size = 32
        self.tokenizer = LogTokenizer(save_path)
        self.model_path = save_path / model_name
        self.tokenizer.load_vocab()
        self.model = make_model(self.tokenizer.n_words, self.tokenizer.n_words, N=1, d_model=256, d_ff=256,
                                dropout=0.1, max_len=self.pad_len)
        self.model_opt = torch.optim.Adam(self.model.parameters(), lr=0.001, betas=(0.9, 0.999), weight_decay=0.005)
        self.load_model()
        self.model.eval()

    def load_model(self) -> None:
        ckpt = torch.load(self.model_path, map_location=torch.device("cpu"))
        # Opni's try/except falls back to `model.load_state_dict(ckpt)` on any failure, which cannot load a
        # dict of this shape and leaves the service without a model: here the failure is the test's.
        self.model_opt.load_state_dict(ckpt["optimizer_state_dict"])
        self.model.load_state_dict(ckpt["model_state_dict"])
        self.epoch, self.loss = ckpt["epoch"], ckpt["loss"]

    def tokenize_data(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer.tokenize_data(texts)

    def num_there(self, s: str) -> bool:
        digits = [i.isdigit() for i in s]
        return bool(np.mean(digits) > 0.0) if digits else False

    def _padded(self, data: list[list[int]]) -> np.ndarray:  # MaskedDataset._get_padded_data
        pd = np.zeros((len(data), self.pad_len), dtype=np.int64)
        for n, d in enumerate(data):
            pd[n][: min(len(d), self.pad_len)] = np.asarray(d[: self.pad_len])
        return pd

    def do_mask(self, srcs, data_lens, indices):
        src, trg, idxs = [], [], []
        for i in range(len(data_lens)):
            for j in np.arange(1, 1 + data_lens[i]):  # offset 1, mask_percentage 1.0: every position
                tmp = srcs[i].clone()
                trg.append(tmp[j].clone())
                tmp[j] = 2  # <MASK>
                src.append(tmp)
                idxs.append(indices[i])
        return torch.stack(src), torch.stack(trg), idxs

    def run_test(self, data: list[list[int]]):
        padded = torch.from_numpy(self._padded(data))
        with torch.no_grad():
            for start in range(0, len(data), self.batch_size):  # SequentialSampler, batches of 32
                rows = range(start, min(start + self.batch_size, len(data)))
                lens = [len(data[i]) - 1 if len(data[i]) < self.pad_len else self.pad_len - 1 for i in rows]
                b_input, b_labels, ind = self.do_mask(padded[list(rows)], lens, list(rows))
                src_mask = (b_input != 0).unsqueeze(-2)  # Batch(src, trg, 0).src_mask
                out = self.model.forward(b_input, None, src_mask, None)
                out_p = self.model.generator(out)
                yield torch.argsort(out_p, dim=1).numpy(), b_labels.numpy(), ind

    def predict(self, data: list[list[int]]) -> list[float]:
        preds: list[float] = []
        for x, y, ind in self.run_test(data):
            true_pred = total_count = 0
            for j in range(len(x)):
                if not self.num_there(self.tokenizer.index2word[y[j]]):
                    if y[j] in x[j][-self.k :]:
                        true_pred += 1
                    total_count += 1
                if j == len(x) - 1 or ind[j] != ind[j + 1]:
                    preds.append(1.0 if total_count == 0 else true_pred / total_count)
                    true_pred = total_count = 0
        return preds


def opni_scores(save_path: Path, logs: list[str], *, min_log_tokens: int = 1) -> dict[str, float]:
    """`OpniLogPredictor.predict` after `load(save_path)`: one line at a time."""
    parser = LogParser(save_path)
    out = {}
    for log in logs:
        tokens = parser.tokenize_data([log])
        out[log] = 1.0 if len(tokens[0]) < min_log_tokens else parser.predict(tokens)[0]
    return out
