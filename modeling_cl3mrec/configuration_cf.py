"""Configuration of the collaborative-filtering (CF) encoders."""

from transformers import PretrainedConfig

ENCODER_TYPES = ("popularity", "mf", "lightgcn", "sasrec", "din")
GRAPH_EDGES = ("positive", "all")


class CFRecConfig(PretrainedConfig):
    r"""Configuration of a :class:`CFRecModel` / one collaborative encoder. Every size lives here, so an
    encoder is built from the config alone (no dataset object).

    Args:
        encoder_type (`str`, *optional*, defaults to `"mf"`):
            One of `"popularity"`, `"mf"`, `"lightgcn"`, `"sasrec"`, `"din"`.
        num_users (`int`, *optional*, defaults to 2):
            User id-space size (max id + 1; id 0 is padding / the cold-user row).
        num_items (`int`, *optional*, defaults to 2):
            Item id-space size (max id + 1; id 0 is padding / the cold-item row).
        hidden_size (`int`, *optional*, defaults to 64):
            Embedding size `d` of users and items (what the CL3M-Rec projector reads).
        use_bias (`bool`, *optional*, defaults to `True`):
            Add a global, a per-user and a per-item bias to the score (CoLLM's MF has none; on the
            ML-1M time split they carry much of the AUC).
        max_history (`int`, *optional*, defaults to 20):
            Length `L` of the history window (most recent items) fed to SASRec / DIN.
        num_layers (`int`, *optional*, defaults to 2):
            LightGCN propagation layers `K` / SASRec transformer blocks.
        num_heads (`int`, *optional*, defaults to 1):
            SASRec attention heads (must divide `hidden_size`).
        dropout (`float`, *optional*, defaults to 0.1):
            Dropout of SASRec blocks and DIN MLPs, in `[0, 1)`.
        attention_hidden_sizes (`list[int]`, *optional*, defaults to `[64, 32]`):
            DIN attention-MLP hidden sizes.
        mlp_hidden_sizes (`list[int]`, *optional*, defaults to `[128, 64]`):
            DIN scorer-MLP hidden sizes.
        sasrec_use_user_embedding (`bool`, *optional*, defaults to `False`):
            Add a learned user embedding to SASRec's sequence representation.
        graph_edges (`str`, *optional*, defaults to `"positive"`):
            Which train interactions form the LightGCN graph: `"positive"` (label 1) or `"all"`.
        num_graph_edges (`int`, *optional*, defaults to 0):
            Number of LightGCN edges; set by `LightGCNEncoder.set_graph` (it fixes the buffer shapes).
        popularity_smoothing (`float`, *optional*, defaults to 10.0):
            Pseudo-count pulling an item's positive rate toward the global rate (popularity encoder).
        initializer_range (`float`, *optional*, defaults to 0.1):
            Standard deviation of the embedding-table initialisation.
    """

    model_type = "cl3mrec_cf"

    def __init__(
        self,
        encoder_type: str = "mf",
        num_users: int = 2,
        num_items: int = 2,
        hidden_size: int = 64,
        use_bias: bool = True,
        max_history: int = 20,
        num_layers: int = 2,
        num_heads: int = 1,
        dropout: float = 0.1,
        attention_hidden_sizes=(64, 32),
        mlp_hidden_sizes=(128, 64),
        sasrec_use_user_embedding: bool = False,
        graph_edges: str = "positive",
        num_graph_edges: int = 0,
        popularity_smoothing: float = 10.0,
        initializer_range: float = 0.1,
        **kwargs,
    ):
        if encoder_type not in ENCODER_TYPES:
            raise ValueError(f"CFRecConfig.encoder_type must be one of {ENCODER_TYPES}, got {encoder_type!r}")
        if graph_edges not in GRAPH_EDGES:
            raise ValueError(f"CFRecConfig.graph_edges must be one of {GRAPH_EDGES}, got {graph_edges!r}")
        for name, value, minimum in (
            ("num_users", num_users, 2),
            ("num_items", num_items, 2),
            ("hidden_size", hidden_size, 1),
            ("max_history", max_history, 1),
            ("num_layers", num_layers, 0 if encoder_type == "lightgcn" else 1),
            ("num_heads", num_heads, 1),
            ("num_graph_edges", num_graph_edges, 0),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"CFRecConfig.{name} must be an int >= {minimum}, got {value!r}")
        if hidden_size % num_heads != 0:
            raise ValueError(f"CFRecConfig.hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
        for name, value in (("use_bias", use_bias), ("sasrec_use_user_embedding", sasrec_use_user_embedding)):
            if not isinstance(value, bool):
                raise ValueError(f"CFRecConfig.{name} must be true or false, got {value!r}")
        # `not x >= bound` (not `x < bound`): NaN is refused too.
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"CFRecConfig.dropout must be in [0, 1), got {dropout!r}")
        if not popularity_smoothing >= 0:
            raise ValueError(f"CFRecConfig.popularity_smoothing must be >= 0, got {popularity_smoothing!r}")
        if not initializer_range > 0:
            raise ValueError(f"CFRecConfig.initializer_range must be > 0, got {initializer_range!r}")
        for name, sizes in (("attention_hidden_sizes", attention_hidden_sizes), ("mlp_hidden_sizes", mlp_hidden_sizes)):
            if not isinstance(sizes, (list, tuple)) or any(
                not isinstance(size, int) or isinstance(size, bool) or size < 1 for size in sizes
            ):
                raise ValueError(f"CFRecConfig.{name} must be a list of positive ints, got {sizes!r}")
        self.encoder_type = encoder_type
        self.num_users = num_users
        self.num_items = num_items
        self.hidden_size = hidden_size
        self.use_bias = use_bias
        self.max_history = max_history
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.dropout = float(dropout)
        self.attention_hidden_sizes = list(attention_hidden_sizes)
        self.mlp_hidden_sizes = list(mlp_hidden_sizes)
        self.sasrec_use_user_embedding = sasrec_use_user_embedding
        self.graph_edges = graph_edges
        self.num_graph_edges = num_graph_edges
        self.popularity_smoothing = float(popularity_smoothing)
        self.initializer_range = float(initializer_range)
        super().__init__(**kwargs)
