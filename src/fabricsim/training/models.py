"""Dense transformer models: presets from published architecture figures, parameters and FLOPs per token.

The parameter count is computed from the architecture, never copied: each preset also records the count
its authors published, and the tests check that the two agree to within 1%.

Sources of the architecture figures:

- Llama 3 8B / 70B / 405B: Llama 3 paper, Grattafiori et al., "The Llama 3 Herd of Models",
  arXiv:2407.21783, Table 3 (layers, model dimension, FFN dimension, attention heads, key/value heads,
  8,192-token pre-training sequence length); vocabulary size 128,256 from the released ``config.json``
  files (meta-llama/Meta-Llama-3-8B, -70B, Llama-3.1-405B on Hugging Face; the paper rounds it to 128K).
  Untied input and output embeddings, SwiGLU MLP (three matrices), RMSNorm (one weight vector), RoPE.
- GPT-3 175B: Brown et al., "Language Models are Few-Shot Learners", arXiv:2005.14165, Table 2.1 (96 layers,
  d_model 12,288, 96 heads of 128, context 2,048); FFN 4 x d_model, GPT-2 BPE vocabulary of 50,257, learned
  position embeddings, tied input/output embeddings, LayerNorm and biases (GPT-2 architecture, Radford et al.
  2019, which GPT-3 says it follows).

FLOPs per token of training (forward + backward) are 6 x parameters (Kaplan et al., "Scaling Laws for Neural
Language Models", arXiv:2001.08361, section 2.1: 2N forward, twice that backward). ``attention=True`` adds
the attention score and value products, 12 x layers x d_model x sequence length per token (Chowdhery et al.,
"PaLM", arXiv:2204.02311, appendix B), which is what the PaLM and Megatron MFU definitions count.

User models come from a TOML file with exactly these keys (unknown or missing keys are a ConfigError)::

    name = "my-13b"
    layers = 40
    hidden = 5120
    ffn = 13824
    heads = 40
    kv_heads = 40          # optional, default heads
    vocab = 32000
    seq_len = 4096
    mlp = "swiglu"         # optional: "swiglu" (3 matrices) or "gelu" (2 matrices, with biases)
    tied_embeddings = false  # optional
    position = "rope"      # optional: "rope" or "learned"
    published_params = 13.0e9  # optional, only for the check
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields

from fabricsim.errors import ConfigError

__all__ = ["Model", "MODELS", "model_preset", "load_model", "resolve_model"]


# Upper bounds far above any published model (Llama 3 405B: 126 layers, hidden 16,384, FFN 53,248, 128K
# vocabulary), so that a typo cannot ask for a model no machine could hold.
_MAX_DIMENSION = {"layers": 10_000, "hidden": 2**20, "ffn": 2**22, "heads": 2**16, "vocab": 2**24,
                  "seq_len": 2**24}


@dataclass(frozen=True)
class Model:
    """A dense decoder-only transformer.

    Parameters
    ----------
    name : str
    layers, hidden, ffn, heads, kv_heads, vocab, seq_len : int
        Transformer blocks, model dimension, MLP inner dimension, attention heads, key/value heads (grouped-
        query attention when fewer than ``heads``), vocabulary size, training sequence length (tokens).
    mlp : {"swiglu", "gelu"}
        SwiGLU has three weight matrices and no biases (Llama); GELU two, with biases (GPT).
    tied_embeddings : bool
        Whether the output projection reuses the input embedding matrix.
    position : {"rope", "learned"}
        Learned position embeddings add ``seq_len x hidden`` parameters.
    published_params : float, optional
        The count the authors published, for comparison only.

    Examples
    --------
    >>> m = model_preset("llama3-8b")
    >>> round(m.params / 1e9, 2)
    8.03
    >>> m.flops_per_token() == 6 * m.params
    True
    """

    name: str
    layers: int
    hidden: int
    ffn: int
    heads: int
    vocab: int
    seq_len: int
    kv_heads: int | None = None
    mlp: str = "swiglu"
    tied_embeddings: bool = False
    position: str = "rope"
    published_params: float | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "ffn", "heads", "vocab", "seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_DIMENSION[name]:
                raise ConfigError(f"model {self.name!r}: {name} must be an integer in 1..{_MAX_DIMENSION[name]:,}, "
                                  f"got {value!r}")
        kv = self.heads if self.kv_heads is None else self.kv_heads
        if isinstance(kv, bool) or not isinstance(kv, int) or kv < 1 or self.heads % kv:
            raise ConfigError(f"model {self.name!r}: kv_heads must be a positive divisor of heads ({self.heads}), "
                              f"got {self.kv_heads!r}")
        object.__setattr__(self, "kv_heads", kv)
        if self.hidden % self.heads:
            raise ConfigError(f"model {self.name!r}: hidden ({self.hidden}) must be a multiple of heads "
                              f"({self.heads})")
        if self.mlp not in ("swiglu", "gelu"):
            raise ConfigError(f"model {self.name!r}: mlp must be 'swiglu' or 'gelu', got {self.mlp!r}")
        if self.position not in ("rope", "learned"):
            raise ConfigError(f"model {self.name!r}: position must be 'rope' or 'learned', got {self.position!r}")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def layer_params(self) -> int:
        """Weights of one transformer block (attention, MLP, norms)."""
        d, kv = self.hidden, self.kv_heads * self.head_dim
        if self.mlp == "swiglu":  # Llama: no biases, RMSNorm weight only
            attention = d * d + 2 * d * kv + d * d
            mlp = 3 * d * self.ffn
            norms = 2 * d
        else:  # GPT-2/3: biases everywhere, LayerNorm weight and bias
            attention = (d * d + d) + 2 * (d * kv + kv) + (d * d + d)
            mlp = (d * self.ffn + self.ffn) + (self.ffn * d + d)
            norms = 2 * 2 * d
        return attention + mlp + norms

    @property
    def embedding_params(self) -> int:
        """Input embedding, output projection (unless tied), position table and the final norm."""
        n = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        if self.position == "learned":
            n += self.seq_len * self.hidden
        n += self.hidden * (1 if self.mlp == "swiglu" else 2)
        return n

    @property
    def params(self) -> int:
        """Parameter count computed from the architecture."""
        return self.layers * self.layer_params + self.embedding_params

    def flops_per_token(self, *, attention: bool = False) -> float:
        """Training FLOPs per token: 6 x params, plus 12 x layers x hidden x seq_len with ``attention``."""
        flops = 6.0 * self.params
        if attention:
            flops += 12.0 * self.layers * self.hidden * self.seq_len
        return flops

    def describe(self) -> str:
        pub = f", published {self.published_params / 1e9:g}B" if self.published_params else ""
        return (f"{self.name}: {self.params / 1e9:.2f}B parameters{pub}; {self.layers} layers, hidden {self.hidden}, "
                f"FFN {self.ffn}, {self.heads} heads ({self.kv_heads} KV), vocab {self.vocab}, seq {self.seq_len}")


_LLAMA3 = "arXiv:2407.21783 Table 3; vocab 128,256 from the released config.json"
MODELS: dict[str, Model] = {m.name: m for m in (
    Model("llama3-8b", layers=32, hidden=4096, ffn=14336, heads=32, kv_heads=8, vocab=128256, seq_len=8192,
          published_params=8.03e9, source=_LLAMA3 + " (8.03B: model card)"),
    Model("llama3-70b", layers=80, hidden=8192, ffn=28672, heads=64, kv_heads=8, vocab=128256, seq_len=8192,
          published_params=70.6e9, source=_LLAMA3 + " (70.6B: model card)"),
    Model("llama3-405b", layers=126, hidden=16384, ffn=53248, heads=128, kv_heads=8, vocab=128256, seq_len=8192,
          published_params=405e9, source=_LLAMA3),
    Model("gpt3-175b", layers=96, hidden=12288, ffn=4 * 12288, heads=96, vocab=50257, seq_len=2048, mlp="gelu",
          tied_embeddings=True, position="learned", published_params=175e9,
          source="arXiv:2005.14165 Table 2.1; FFN 4 x d_model and vocab 50,257 as GPT-2"),
)}


def model_preset(name: str) -> Model:
    """The preset called ``name`` (case-insensitive), or a ConfigError listing the known ones."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(MODELS)} (or a path to a .toml file)") from None


_REQUIRED = ("name", "layers", "hidden", "ffn", "heads", "vocab", "seq_len")
_OPTIONAL = ("kv_heads", "mlp", "tied_embeddings", "position", "published_params", "source")


def load_model(path: str | os.PathLike) -> Model:
    """A Model from a TOML file (see the module docstring for its keys); ConfigError on any problem."""
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.loads(fh.read().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"model file {os.fspath(path)!r} is not a text file (not UTF-8); expected TOML") from None
    except FileNotFoundError:
        raise ConfigError(f"model file {os.fspath(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"model file {os.fspath(path)!r} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read model file {os.fspath(path)!r}: {exc.strerror}") from None
    if isinstance(data.get("model"), dict) and len(data) == 1:
        data = data["model"]  # a single [model] table is accepted too
    unknown = sorted(set(data) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise ConfigError(f"model file {os.fspath(path)!r}: unknown key(s) {', '.join(unknown)}; "
                          f"allowed: {', '.join(_REQUIRED + _OPTIONAL)}")
    missing = [k for k in _REQUIRED if k not in data]
    if missing:
        raise ConfigError(f"model file {os.fspath(path)!r}: missing key(s) {', '.join(missing)}")
    if not isinstance(data["name"], str):
        raise ConfigError(f"model file {os.fspath(path)!r}: name must be a string")
    for key in ("tied_embeddings",):
        if key in data and not isinstance(data[key], bool):
            raise ConfigError(f"model file {os.fspath(path)!r}: {key} must be true or false")
    if "published_params" in data:
        pub = data["published_params"]
        if isinstance(pub, bool) or not isinstance(pub, (int, float)) or pub <= 0:
            raise ConfigError(f"model file {os.fspath(path)!r}: published_params must be a positive number")
        data["published_params"] = float(pub)
    try:
        return Model(**{f.name: data[f.name] for f in fields(Model) if f.name in data})
    except ConfigError as exc:
        raise ConfigError(f"model file {os.fspath(path)!r}: {exc}") from None


def resolve_model(name_or_path: str) -> Model:
    """A preset by name, or a TOML model file by path; ConfigError for anything else."""
    if isinstance(name_or_path, Model):
        return name_or_path
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ConfigError(f"a model is a preset name or a TOML file path, got {type(name_or_path).__name__}")
    name_or_path = os.fspath(name_or_path)
    if name_or_path.lower() in MODELS:
        return MODELS[name_or_path.lower()]
    if name_or_path.endswith(".toml") or os.path.exists(name_or_path):
        return load_model(name_or_path)
    return model_preset(name_or_path)
