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

Mixture-of-experts presets (parameters computed from the released configurations, checked against the totals
their authors published; ``active_params`` counts the weights one token passes through, both embeddings
included):

- Mixtral 8x7B: Jiang et al., "Mixtral of Experts", arXiv:2401.04088, Table 1 and the released ``config.json``
  (mistralai/Mixtral-8x7B-v0.1: hidden 4,096, 32 layers, 32 heads, 8 KV heads, expert FFN 14,336, 8 experts,
  top-2, vocab 32,000, 32,768-token context). Published: 46.7B total, 12.9B active (Mistral AI's release
  note "Mixtral of experts", 2023-12-11). Computed: 46.70B and 12.88B.
- DeepSeek-V3: DeepSeek-AI, "DeepSeek-V3 Technical Report", arXiv:2412.19437, section 4.2, and the released
  ``config.json`` (deepseek-ai/DeepSeek-V3: hidden 7,168, 61 layers of which the first 3 dense with FFN
  18,432, 128 heads of multi-head latent attention with q_lora_rank 1,536, kv_lora_rank 512, qk_nope 128,
  qk_rope 64, v_head 128; 256 routed experts of FFN 2,048 plus 1 shared, top-8; vocab 129,280, 4K
  pre-training sequence). Published: 671B total, 37B active, without the 14B multi-token-prediction module,
  which is not modelled; DeepSeek's own weight notes give 36.6B active *without* the 0.9B input embedding.
  Computed: 671.0B and 37.5B (36.6B without the input embedding).
- Llama 4 Maverick (text model): Meta's "The Llama 4 herd" release note (2025-04-05) and the released
  ``config.json`` (meta-llama/Llama-4-Maverick-17B-128E: hidden 5,120, 48 layers alternating dense (FFN
  16,384) and MoE (``interleave_moe_layer_step`` 2), 40 heads, 8 KV heads, 128 routed experts of FFN 8,192
  plus 1 shared, top-1, vocab 202,048). Published: 400B total, 17B active. Computed: 400.7B and 17.2B.
- DBRX: Databricks, "Introducing DBRX" (2024-03-27) and the released ``config.json`` (databricks/dbrx-base:
  d_model 6,144, 40 layers, 48 heads, 8 KV heads, 16 experts of FFN 10,752, top-4, vocab 100,352, 32K
  context; SwiGLU). Published: 132B total, 36B active. Computed: 131.6B and 36.4B.

FLOPs per token of training (forward + backward) are 6 x parameters (Kaplan et al., "Scaling Laws for Neural
Language Models", arXiv:2001.08361, section 2.1: 2N forward, twice that backward). ``attention=True`` adds
the attention score and value products, 12 x layers x d_model x sequence length per token (Chowdhery et al.,
"PaLM", arXiv:2204.02311, appendix B), which is what the PaLM and Megatron MFU definitions count. For a
mixture of experts the parameters are the *active* ones (a token's FLOPs go through its top-k experts only),
and the attention term uses the query-key and value widths (``6 x layers x seq_len x (qk_dim + v_dim)``,
which is the 12 x hidden form when both are the model dimension, and differs for MLA).

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
    dropout = 0.0          # optional: > 0 keeps dropout masks in the activation memory (GPT-3: 0.1)
    published_params = 13.0e9  # optional, only for the check

A mixture of experts adds (all optional; ``experts = 0`` is a dense model)::

    experts = 8            # routed experts per MoE layer
    top_k = 2              # routed experts per token
    expert_ffn = 14336     # inner dimension of one expert (default: ffn)
    shared_experts = 0     # experts every token passes through, beside the routed ones
    dense_layers = 0       # the first layers keep a dense MLP of width ffn (DeepSeek: 3)
    moe_every = 1          # after those, layer i is MoE when (i + 1) % moe_every == 0 (Llama 4: 2)
    published_active_params = 12.9e9

and multi-head latent attention (DeepSeek-V2/V3) replaces grouped-query attention when ``kv_lora_rank`` is
set: ``q_lora_rank`` (0: queries projected directly), ``kv_lora_rank``, ``qk_nope_dim``, ``qk_rope_dim``,
``v_head_dim``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import cached_property

from fabricsim.errors import ConfigError

__all__ = ["Model", "MODELS", "model_preset", "load_model", "resolve_model"]


# Upper bounds far above any published model (Llama 3 405B: 126 layers, hidden 16,384, FFN 53,248, 128K
# vocabulary), so that a typo cannot ask for a model no machine could hold.
_MAX_DIMENSION = {"layers": 10_000, "hidden": 2**20, "ffn": 2**22, "heads": 2**16, "vocab": 2**24,
                  "seq_len": 2**24}


@dataclass(frozen=True)
class Model:
    """A decoder-only transformer, dense or mixture of experts.

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
    experts, top_k, expert_ffn, shared_experts, dense_layers, moe_every : int
        Mixture of experts (see the module docstring); ``experts == 0`` is a dense model.
    q_lora_rank, kv_lora_rank, qk_nope_dim, qk_rope_dim, v_head_dim : int
        Multi-head latent attention (DeepSeek-V2, arXiv:2405.04434, section 2.1) when ``kv_lora_rank > 0``.
    published_active_params : float, optional
        The published active count (mixture of experts), for comparison only.
    dropout : float
        Dropout probability of the residual branches and attention probabilities (0: none, as Llama);
        it only changes the activation memory (1-byte masks, ``training.memory``).

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
    experts: int = 0
    top_k: int = 0
    expert_ffn: int | None = None
    shared_experts: int = 0
    dense_layers: int = 0
    moe_every: int = 1
    q_lora_rank: int = 0
    kv_lora_rank: int = 0
    qk_nope_dim: int = 0
    qk_rope_dim: int = 0
    v_head_dim: int = 0
    published_active_params: float | None = None
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for name in ("layers", "hidden", "ffn", "heads", "vocab", "seq_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= _MAX_DIMENSION[name]:
                raise ConfigError(f"model {self.name!r}: {name} must be an integer in 1..{_MAX_DIMENSION[name]:,}, "
                                  f"got {value!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"model {self.name!r}: dropout must be a probability in [0, 1), got {self.dropout!r}")
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
        for name in ("experts", "top_k", "shared_experts", "dense_layers", "q_lora_rank", "kv_lora_rank",
                     "qk_nope_dim", "qk_rope_dim", "v_head_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"model {self.name!r}: {name} must be a non-negative integer, got {value!r}")
        if isinstance(self.moe_every, bool) or not isinstance(self.moe_every, int) or self.moe_every < 1:
            raise ConfigError(f"model {self.name!r}: moe_every must be a positive integer, got {self.moe_every!r}")
        if self.experts:
            if not 1 <= self.top_k <= self.experts:
                raise ConfigError(f"model {self.name!r}: top_k must be between 1 and experts ({self.experts}), "
                                  f"got {self.top_k!r}")
            if self.dense_layers >= self.layers:
                raise ConfigError(f"model {self.name!r}: dense_layers ({self.dense_layers}) leaves no MoE layer "
                                  f"out of {self.layers}")
            if not self.moe_layer_count:
                raise ConfigError(f"model {self.name!r}: moe_every {self.moe_every} leaves no MoE layer")
        elif self.top_k or self.shared_experts or self.expert_ffn is not None:
            raise ConfigError(f"model {self.name!r}: top_k, expert_ffn and shared_experts need experts > 0")
        ef = self.ffn if self.expert_ffn is None else self.expert_ffn
        if isinstance(ef, bool) or not isinstance(ef, int) or ef < 1:
            raise ConfigError(f"model {self.name!r}: expert_ffn must be a positive integer, got {self.expert_ffn!r}")
        object.__setattr__(self, "expert_ffn", ef)
        if self.kv_lora_rank and not (self.qk_nope_dim + self.qk_rope_dim and self.v_head_dim):
            raise ConfigError(f"model {self.name!r}: latent attention (kv_lora_rank) needs qk_nope_dim or "
                              f"qk_rope_dim, and v_head_dim")
        if not self.kv_lora_rank and (self.q_lora_rank or self.qk_nope_dim or self.qk_rope_dim or self.v_head_dim):
            raise ConfigError(f"model {self.name!r}: q_lora_rank, qk_nope_dim, qk_rope_dim and v_head_dim "
                              f"describe latent attention and need kv_lora_rank > 0")

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def is_moe(self) -> bool:
        return self.experts > 0

    @property
    def latent_attention(self) -> bool:
        return self.kv_lora_rank > 0

    def is_moe_layer(self, i: int) -> bool:
        """Whether block ``i`` (0-based) has experts: past ``dense_layers``, every ``moe_every``-th block."""
        return self.experts > 0 and i >= self.dense_layers and (i + 1) % self.moe_every == 0

    @cached_property
    def moe_layer_count(self) -> int:
        return sum(self.is_moe_layer(i) for i in range(self.layers))

    @property
    def qk_dim(self) -> int:
        """Width of the query-key products summed over heads (the attention-score FLOPs use it)."""
        return self.heads * (self.qk_nope_dim + self.qk_rope_dim) if self.latent_attention else self.hidden

    @property
    def v_dim(self) -> int:
        """Width of the attention values summed over heads."""
        return self.heads * self.v_head_dim if self.latent_attention else self.hidden

    @cached_property
    def attention_params(self) -> int:
        """Weights of one block's attention (projections and, for latent attention, its norms)."""
        d = self.hidden
        if self.latent_attention:  # DeepSeek-V2 arXiv:2405.04434 section 2.1: down- and up-projections
            qk_head = self.qk_nope_dim + self.qk_rope_dim
            if self.q_lora_rank:
                q = d * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * self.heads * qk_head
            else:
                q = d * self.heads * qk_head
            kv = (d * (self.kv_lora_rank + self.qk_rope_dim) + self.kv_lora_rank
                  + self.kv_lora_rank * self.heads * (self.qk_nope_dim + self.v_head_dim))
            return q + kv + self.heads * self.v_head_dim * d
        kv = self.kv_heads * self.head_dim
        if self.mlp == "swiglu":  # Llama: no biases
            return d * d + 2 * d * kv + d * d
        return (d * d + d) + 2 * (d * kv + kv) + (d * d + d)  # GPT-2/3: biases everywhere

    def mlp_params(self, width: int | None = None) -> int:
        """Weights of one MLP (or one expert) of inner dimension ``width`` (default ``ffn``)."""
        d, f = self.hidden, self.ffn if width is None else width
        return 3 * d * f if self.mlp == "swiglu" else (d * f + f) + (f * d + d)

    @property
    def norm_params(self) -> int:
        """The two norms of a block: RMSNorm weight (SwiGLU models) or LayerNorm weight and bias."""
        return 2 * self.hidden * (1 if self.mlp == "swiglu" else 2)

    @cached_property
    def layer_params(self) -> int:
        """Weights of one dense transformer block (attention, MLP, norms)."""
        return self.attention_params + self.mlp_params() + self.norm_params

    @cached_property
    def expert_params(self) -> int:
        """Weights of one routed expert."""
        return self.mlp_params(self.expert_ffn)

    @cached_property
    def moe_layer_params(self) -> int:
        """Weights of one MoE block: attention, norms, router, routed and shared experts."""
        router = self.hidden * self.experts
        return (self.attention_params + self.norm_params + router
                + (self.experts + self.shared_experts) * self.expert_params)

    @cached_property
    def routed_expert_params(self) -> int:
        """Weights of all routed experts of all MoE layers: what expert parallelism shards."""
        return self.moe_layer_count * self.experts * self.expert_params

    @cached_property
    def embedding_params(self) -> int:
        """Input embedding, output projection (unless tied), position table and the final norm."""
        n = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        if self.position == "learned":
            n += self.seq_len * self.hidden
        n += self.hidden * (1 if self.mlp == "swiglu" else 2)
        return n

    def block_params(self, i: int) -> int:
        """Weights of block ``i`` (0-based): a MoE block or a dense one."""
        return self.moe_layer_params if self.is_moe_layer(i) else self.layer_params

    @cached_property
    def params(self) -> int:
        """Parameter count computed from the architecture (every expert included)."""
        moe = self.moe_layer_count
        return (self.layers - moe) * self.layer_params + moe * self.moe_layer_params + self.embedding_params

    @cached_property
    def active_params(self) -> int:
        """Weights one token passes through: its top-k routed experts and the shared ones (== params if dense)."""
        moe = self.moe_layer_count
        idle = (self.experts - self.top_k) * self.expert_params
        return self.params - moe * idle

    def flops_per_token(self, *, attention: bool = False) -> float:
        """Training FLOPs per token: 6 x active params, plus 6 x layers x seq_len x (qk_dim + v_dim) with
        ``attention`` (12 x layers x hidden x seq_len for ordinary attention)."""
        flops = 6.0 * self.active_params
        if attention:
            flops += 6.0 * self.layers * self.seq_len * (self.qk_dim + self.v_dim)
        return flops

    def describe(self) -> str:
        pub = f", published {self.published_params / 1e9:g}B" if self.published_params else ""
        text = (f"{self.name}: {self.params / 1e9:.2f}B parameters{pub}; {self.layers} layers, hidden {self.hidden}, "
                f"FFN {self.ffn}, {self.heads} heads ({self.kv_heads} KV), vocab {self.vocab}, seq {self.seq_len}")
        if self.is_moe:
            text += (f"; {self.moe_layer_count} MoE layers of {self.experts} experts (FFN {self.expert_ffn}, top-"
                     f"{self.top_k}{f', {self.shared_experts} shared' if self.shared_experts else ''}), "
                     f"{self.active_params / 1e9:.2f}B active")
        return text


_LLAMA3 = "arXiv:2407.21783 Table 3; vocab 128,256 from the released config.json"
MODELS: dict[str, Model] = {m.name: m for m in (
    Model("llama3-8b", layers=32, hidden=4096, ffn=14336, heads=32, kv_heads=8, vocab=128256, seq_len=8192,
          published_params=8.03e9, source=_LLAMA3 + " (8.03B: model card)"),
    Model("llama3-70b", layers=80, hidden=8192, ffn=28672, heads=64, kv_heads=8, vocab=128256, seq_len=8192,
          published_params=70.6e9, source=_LLAMA3 + " (70.6B: model card)"),
    Model("llama3-405b", layers=126, hidden=16384, ffn=53248, heads=128, kv_heads=8, vocab=128256, seq_len=8192,
          published_params=405e9, source=_LLAMA3),
    Model("gpt3-175b", layers=96, hidden=12288, ffn=4 * 12288, heads=96, vocab=50257, seq_len=2048, mlp="gelu",
          tied_embeddings=True, position="learned", published_params=175e9, dropout=0.1,
          source="arXiv:2005.14165 Table 2.1; FFN 4 x d_model and vocab 50,257 as GPT-2; dropout 0.1: "
                 "Megatron-LM's default hidden and attention dropout, which arXiv:2205.05198 section 4 counts"),
    Model("mixtral-8x7b", layers=32, hidden=4096, ffn=14336, heads=32, kv_heads=8, vocab=32000, seq_len=32768,
          experts=8, top_k=2, published_params=46.7e9, published_active_params=12.9e9,
          source="arXiv:2401.04088 Table 1; mistralai/Mixtral-8x7B-v0.1 config.json; 46.7B / 12.9B: Mistral AI"),
    Model("deepseek-v3", layers=61, hidden=7168, ffn=18432, heads=128, vocab=129280, seq_len=4096,
          experts=256, top_k=8, expert_ffn=2048, shared_experts=1, dense_layers=3,
          q_lora_rank=1536, kv_lora_rank=512, qk_nope_dim=128, qk_rope_dim=64, v_head_dim=128,
          published_params=671e9, published_active_params=37e9,
          source="arXiv:2412.19437 section 4.2; deepseek-ai/DeepSeek-V3 config.json (MTP module not modelled)"),
    Model("llama4-maverick", layers=48, hidden=5120, ffn=16384, heads=40, kv_heads=8, vocab=202048, seq_len=8192,
          experts=128, top_k=1, expert_ffn=8192, shared_experts=1, moe_every=2,
          published_params=400e9, published_active_params=17e9,
          source="Meta 'The Llama 4 herd' (2025-04-05); meta-llama/Llama-4-Maverick-17B-128E config.json"),
    Model("dbrx", layers=40, hidden=6144, ffn=10752, heads=48, kv_heads=8, vocab=100352, seq_len=32768,
          experts=16, top_k=4, published_params=132e9, published_active_params=36e9,
          source="Databricks 'Introducing DBRX' (2024-03-27); databricks/dbrx-base config.json"),
)}


def model_preset(name: str) -> Model:
    """The preset called ``name`` (case-insensitive), or a ConfigError listing the known ones."""
    try:
        return MODELS[name.lower()]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; known: {', '.join(MODELS)} (or a path to a .toml file)") from None


_REQUIRED = ("name", "layers", "hidden", "ffn", "heads", "vocab", "seq_len")
_OPTIONAL = ("kv_heads", "mlp", "tied_embeddings", "position", "published_params", "source", "experts", "top_k",
             "expert_ffn", "shared_experts", "dense_layers", "moe_every", "q_lora_rank", "kv_lora_rank",
             "qk_nope_dim", "qk_rope_dim", "v_head_dim", "published_active_params", "dropout")


def load_model(path: str | os.PathLike) -> Model:
    """A Model from a TOML file (see the module docstring for its keys); ConfigError on any problem."""
    import tomllib

    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"a model file path must be a string or a path, got {type(path).__name__}")
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
    for key in ("published_params", "published_active_params"):
        if key in data:
            pub = data[key]
            if isinstance(pub, bool) or not isinstance(pub, (int, float)) or pub <= 0:
                raise ConfigError(f"model file {os.fspath(path)!r}: {key} must be a positive number")
            data[key] = float(pub)
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
