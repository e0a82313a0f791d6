"""Build a small CLIP-format BPE tokenizer (vocab.json + merges.txt) from a word list.

The demo backbone cannot download CLIP's 49k-token vocabulary, so it ships its own: every
byte (with and without the end-of-word marker ``</w>``) plus merges learned so that each word
of the word list is one token. ``transformers.CLIPTokenizer`` loads the result like SD's.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

__all__ = ["build_clip_tokenizer_files", "bytes_to_unicode", "DEMO_WORDS"]


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-character table of byte-level BPE (GPT-2 / CLIP convention)."""
    keep = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
            + list(range(ord("®"), ord("ÿ") + 1)))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return dict(zip(keep, map(chr, chars)))

_WORD = re.compile(r"[a-z]+|[0-9]|[^\sa-z0-9]+")

# Vocabulary of the demo text encoder: the prompt grammar, BI-RADS lexicon, anatomy, and
# general imaging words, so that nearest-word readouts of learned embeddings are meaningful.
DEMO_WORDS = """
a an the of in on with and or no not without image images ultrasound sonogram sonography b mode
breast tumor tumour mass lesion cyst nodule benign malignant normal cancer carcinoma fibroadenoma
oval round irregular circumscribed indistinct angular microlobulated spiculated margin margins
parallel nonparallel non taller than wide orientation anechoic hypoechoic isoechoic hyperechoic
heterogeneous homogeneous complex echogenic halo posterior acoustic enhancement shadowing shadow
features combined pattern echo internal echoes calcification calcifications duct ducts skin fat
fatty lobule lobules subcutaneous fibroglandular glandular tissue cooper ligament ligaments
pectoral muscle chest wall dense scattered speckle texture bright dark smooth rough sharp edge
small large tiny big left right upper lower central deep superficial near far axial lateral
depth gain noise artifact artefact probe linear transducer scan view density architectural
distortion suspicious probably simple solid fluid filled vascular avascular lymph node axilla
biopsy birads category one two three four five six low high intermediate suspicion
""".split()


def _learn_merges(words: Iterable[str]) -> list[tuple[str, str]]:
    enc = bytes_to_unicode()
    seqs: dict[tuple[str, ...], int] = {}
    for w in words:
        chars = [enc[b] for b in w.encode("utf-8")]
        if not chars:
            continue
        seq = tuple(chars[:-1]) + (chars[-1] + "</w>",)
        seqs[seq] = seqs.get(seq, 0) + 1
    merges: list[tuple[str, str]] = []
    while True:
        pairs: Counter = Counter()
        for seq, n in seqs.items():
            for a, b in zip(seq, seq[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]  # deterministic tie-break
        merges.append(best)
        new: dict[tuple[str, ...], int] = {}
        for seq, n in seqs.items():
            out: list[str] = []
            i = 0
            while i < len(seq):
                if i + 1 < len(seq) and (seq[i], seq[i + 1]) == best:
                    out.append(seq[i] + seq[i + 1])
                    i += 2
                else:
                    out.append(seq[i])
                    i += 1
            new[tuple(out)] = new.get(tuple(out), 0) + n
        seqs = new
    return merges


def build_clip_tokenizer_files(out_dir: str | Path, words: Iterable[str] = DEMO_WORDS,
                               model_max_length: int = 77) -> Path:
    """Write vocab.json, merges.txt and tokenizer configs into ``out_dir``; returns it."""
    words = sorted({t for w in words for t in _WORD.findall(w.lower())})
    merges = _learn_merges(words)
    base = list(bytes_to_unicode().values())
    vocab_list = base + [b + "</w>" for b in base]
    seen = set(vocab_list)
    for a, b in merges:
        tok = a + b
        if tok not in seen:
            vocab_list.append(tok)
            seen.add(tok)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(vocab_list)}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    specials = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer", "model_max_length": model_max_length,
        "do_lower_case": True, "errors": "replace", "add_prefix_space": False, **specials}, indent=2),
        encoding="utf-8")
    return out
