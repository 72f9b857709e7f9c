"""Arguments of one CL3M-Rec training stage: new Trainer knobs, the model, the data.

Shaped after TRL's ``RewardConfig``: the ``TrainingArguments`` subclass holds only the new knobs, each
documented in ``metadata["help"]``, validated in ``__post_init__`` after ``super().__post_init__()``.
All three dataclasses parse from one YAML file through ``HfArgumentParser`` (:func:`parse_config`).
"""

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from .config_values import checked_values, load_yaml_file, refuse_unknown
from .stages import STAGES, trainable_groups

logger = logging.getLogger(__name__)


@dataclass
class CL3MRecTrainingArguments(TrainingArguments):
    """``TrainingArguments`` + the CL3M-Rec stage, contrastive loss and LoRA knobs.

    Defaults that differ from ``TrainingArguments``: ``remove_unused_columns=False`` (the collator decides
    the inputs), ``metric_for_best_model="auc"``, ``report_to="none"``, ``logging_steps=10``, ``use_cpu=None``
    (the CPU only when no CUDA GPU is present, so one YAML trains on either).
    """

    stage: Literal["lora", "cie", "joint"] = field(
        default="lora",
        metadata={
            "help": "What trains: 'lora' (LoRA on text-only prompts, TALLRec / CoLLM step 1), 'cie' (projector, "
            "optionally the CF encoder, on placeholder prompts; CoLLM step 2), 'joint' (LoRA + projector).",
            "choices": list(STAGES),
        },
    )
    contrastive_weight: float = field(
        default=0.0,
        metadata={"help": "λ: weight of the InfoNCE loss between projected CF and LLM text views. 0 = CoLLM."},
    )
    contrastive_temperature: float = field(
        default=0.1, metadata={"help": "τ > 0: temperature of the InfoNCE loss (cosine similarity / τ)."}
    )
    fusion_learning_rate: float = field(
        default=0.02,
        metadata={
            "help": "Learning rate of the residual-fusion weight w (score_fusion: residual). A scalar that must move by "
            "~1 to rescale the CF logit gets its own larger rate; at the projector's rate the LLM would rescale the CF "
            "signal instead, by re-deriving a noisier copy of it."
        },
    )
    share_prefix: bool = field(
        default=True,
        metadata={
            "help": "Rows with the same user and history share one prompt prefix: training batches keep such rows "
            "together (groups in random order each epoch) and the prefix runs once per batch, its KV cache gathered "
            "for its rows; evaluation too. Same loss and scores as whole prompts. Off with activation checkpointing "
            "(which turns the KV cache off: share_prefix is then turned off); an explicit train_sampling_strategy other than random orders training rows "
            "its own way (batches then share prefixes only by chance)."
        },
    )
    compile_train: bool = field(
        default=False,
        metadata={
            "help": "Train with the decoder layers run through torch.compile (forward and backward), on whole prompts "
            "(share_prefix then only orders the rows; evaluations inside training are compiled too): ~1.6x the "
            "eager whole-prompt steps of stage lora on 2 CPU cores, after about a minute of compiling. Losses equal "
            "the eager ones to bf16 rounding (not bit for bit). Stages lora and joint; needs a C++ compiler on "
            "CPUs; not with activation_checkpointing."
        },
    )
    compile_eval: bool = field(
        default=False,
        metadata={
            "help": "Score the stage's final evaluation with the decoder layers run through torch.compile, on whole "
            "prompts (trainers.training.stages.compiled_decoder_layers): 1.3-1.7x faster on 2 Xeon cores with AMX "
            "(no faster on an AMD EPYC) after "
            "some seconds of compiling; scores equal the eager ones to bf16 rounding (not bit for bit). Needs a C++ "
            "compiler on CPUs."
        },
    )
    cf_cross_fit_folds: int = field(
        default=0,
        metadata={
            "help": "K >= 2: each train row's CF features and logit come from a CF model refitted (the CF model's own "
            "recipe) on the other K-1 folds of user contexts, so stage cie does not learn on rows its CF input "
            "memorised (trainers/training/cross_fitting.py); evaluation keeps the full-train CF model. 0 = off "
            "(CoLLM: the full-train CF model for every row). Needs a placeholder template and a frozen CF encoder."
        },
    )
    train_cf_encoder: bool = field(
        default=False,
        metadata={"help": "Also train the CF encoder in stages 'cie'/'joint' (CoLLM's T2 variant); else frozen (T1)."},
    )
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling alpha."})
    lora_dropout: float = field(
        default=0.05,
        metadata={"help": "Dropout on the LoRA input while LoRA trains (a frozen adapter is merged, no dropout)."},
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata={"help": "LLM linear layers that get LoRA (names inside language_model)."},
    )
    early_stopping_patience: int | None = field(
        default=None,
        metadata={"help": "Stop after this many evaluations without a better eval_auc (needs eval_strategy)."},
    )
    export_dir: str | None = field(
        default=None,
        metadata={"help": "Where the merged plain model is exported at the end; default <output_dir>/merged."},
    )
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Must stay False: the CL3M-Rec collator decides the model inputs."}
    )
    metric_for_best_model: str | None = field(
        default="auc", metadata={"help": "Metric that picks the best checkpoint (eval_ prefix optional)."}
    )
    report_to: str | list[str] = field(default="none", metadata={"help": "Integrations, e.g. 'tensorboard'."})
    logging_steps: float = field(default=10, metadata={"help": "Log every this many steps."})
    use_cpu: bool | None = field(
        default=None,
        metadata={
            "help": "Train on the CPU even when a GPU is present (true), or insist on the GPU (false); unset = the "
            "CPU only when no CUDA GPU is present."
        },
    )

    def __post_init__(self):
        if self.use_cpu is False and not torch.cuda.is_available():
            raise ValueError("use_cpu=false insists on a CUDA GPU, but none is available; leave use_cpu unset")
        if self.use_cpu is None:
            self.use_cpu = not torch.cuda.is_available()
        # Every trainable parameter gets a gradient each step, some (alignment heads) only from the loss computed
        # outside the DDP-wrapped forward: DDP's unused-parameter search would mark those ready twice.
        if self.ddp_find_unused_parameters is None:
            self.ddp_find_unused_parameters = False
        super().__post_init__()
        trainable_groups(self.stage, self.train_cf_encoder)  # raises on an unknown stage / bad combination
        if self.contrastive_weight < 0:
            raise ValueError(f"contrastive_weight must be >= 0, got {self.contrastive_weight}")
        if self.contrastive_temperature <= 0:
            raise ValueError(f"contrastive_temperature must be > 0, got {self.contrastive_temperature}")
        if self.cf_cross_fit_folds == 1 or self.cf_cross_fit_folds < 0:
            raise ValueError(f"cf_cross_fit_folds must be 0 (off) or >= 2, got {self.cf_cross_fit_folds}")
        if self.cf_cross_fit_folds and self.train_cf_encoder:
            raise ValueError("cf_cross_fit_folds needs a frozen CF encoder (train_cf_encoder: false)")
        if self.fusion_learning_rate <= 0:
            raise ValueError(f"fusion_learning_rate must be > 0, got {self.fusion_learning_rate}")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:  # else training runs to the end and scoring fails on it
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate < 0:
            raise ValueError(f"learning_rate must be >= 0, got {self.learning_rate}")
        if self.lora_r < 1 or self.lora_alpha < 1 or not 0 <= self.lora_dropout < 1:
            raise ValueError(
                f"LoRA needs lora_r >= 1, lora_alpha >= 1, 0 <= lora_dropout < 1; got "
                f"{self.lora_r}, {self.lora_alpha}, {self.lora_dropout}"
            )
        if self.compile_train and self.stage == "cie":
            raise ValueError(
                "compile_train is for stages lora and joint: stage cie runs the prompt before the first placeholder "
                "without a graph through a KV cache, which compiled layers cannot take (whole prompts, compiled, "
                "measured slower: 4.4 vs 5.0 rows/s); set compile_train: false"
            )
        # transformers 5 reads activation_checkpointing; gradient_checkpointing is its deprecated alias (mirrored)
        if self.compile_train and self.activation_checkpointing:
            raise ValueError(
                "compile_train and activation_checkpointing (gradient_checkpointing) cannot be combined: set one of "
                "them to false"
            )
        if self.share_prefix and self.activation_checkpointing:
            logger.warning("share_prefix turned off: it needs the KV cache, which activation_checkpointing turns off")
            self.share_prefix = False
        if self.remove_unused_columns:
            raise ValueError("remove_unused_columns must be False: the CL3M-Rec collator needs the raw columns")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError(f"early_stopping_patience must be >= 1, got {self.early_stopping_patience}")
        if self.do_train and self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError(
                f"num_train_epochs must be > 0 (or max_steps > 0) to train, got num_train_epochs="
                f"{self.num_train_epochs}, max_steps={self.max_steps}; for no training set do_train: false"
            )


@dataclass
class ModelArguments:
    """What model a stage builds or continues."""

    llm_path: str = field(metadata={"help": "Local directory of the LLM in Hugging Face format (no download)."})
    cf_model_dir: str | None = field(
        default=None, metadata={"help": "Directory of the pretrained CFRecModel (needed by placeholder templates)."}
    )
    init_from: str | None = field(
        default=None,
        metadata={"help": "Output directory of the previous stage; its adapter (LoRA + saved modules) is loaded."},
    )
    template: str = field(
        default="tallrec_ml1m",
        metadata={"help": "Prompt template: a bundled name (trainers/prompts/, without .txt) or a path to a .txt file."},
    )
    tokens_per_entity: int = field(default=1, metadata={"help": "LLM tokens each user / target item occupies."})
    max_history: int = field(
        default=10,
        metadata={
            "help": "Most recent history items rendered in a prompt and averaged into a user's text view. Owned by "
            "the processor (saved in processor_config.json); a CF encoder's own max_history is in its config."
        },
    )
    use_history_embeddings: bool = field(
        default=False, metadata={"help": "Fill <|hist_emb|> placeholders with projected history-item embeddings."}
    )
    answer_score: Literal["yes", "yes_minus_no"] = field(
        default="yes", metadata={"help": "Score = 'Yes' logit (CoLLM) or 'Yes' - 'No' logit."}
    )
    cf_features: Literal["embedding", "embedding_bias"] = field(
        default="embedding",
        metadata={
            "help": "What the projector reads per user / item: the CF embedding (CoLLM) or the embedding with the "
            "entity's bias term of the CF score appended ('embedding_bias'; needs a CF model with biases)."
        },
    )
    score_fusion: Literal["none", "residual", "weighted"] = field(
        default="none",
        metadata={
            "help": "'residual': score = LLM answer logit + w * CF logit, w learned (trains with the projector); "
            "'weighted': score = a * LLM answer logit + w * CF logit, a and w learned (training can turn down an "
            "answer that only adds noise); 'none': the LLM's answer alone (the paper recipe)."
        },
    )
    alignment_dim: int = field(
        default=0,
        metadata={
            "help": "Width of the CLIP-style heads that map the projected CF view and the LLM text view into one "
            "space for the contrastive loss; 0 = compare the two views directly by cosine."
        },
    )
    quantization: Literal["none", "nf4"] = field(
        default="none", metadata={"help": "'nf4': 4-bit QLoRA through bitsandbytes (CUDA only)."}
    )
    train_attn_implementation: Literal["auto", "eager", "sdpa"] = field(
        default="auto",
        metadata={
            "help": "Attention kernel for the training loop; scoring always uses the model's own (SDPA). 'auto' = "
            "eager on CPU, whose backward is faster than CPU SDPA's (benchmarks/results/summary.md), else unchanged."
        },
    )
    dtype: Literal["float32", "bfloat16", "float16"] = field(
        default="float32", metadata={"help": "Dtype of the LLM weights (use bf16: true for bf16 autocast)."}
    )

    def __post_init__(self):
        if self.tokens_per_entity < 1:
            raise ValueError(f"tokens_per_entity must be >= 1, got {self.tokens_per_entity}")
        if self.max_history < 0:
            raise ValueError(f"max_history must be >= 0, got {self.max_history}")
        if self.alignment_dim < 0:
            raise ValueError(f"alignment_dim must be >= 0, got {self.alignment_dim}")


@dataclass
class DataArguments:
    """Where the rows come from and how many are used (subsamples are drawn once with ``subsample_seed``)."""

    data_dir: str = field(metadata={"help": "A DatasetDict saved by data_scripts (save_to_disk + stats.json)."})
    train_split: str = field(default="train", metadata={"help": "Split used for training."})
    eval_split: str = field(default="valid_small", metadata={"help": "Split used for evaluation / model selection."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Random subsample of the train split (budget); None = all rows."}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Random subsample of the eval split; None = all rows (row order kept)."}
    )
    subsample_seed: int = field(default=2023, metadata={"help": "Seed of the train/eval subsamples."})
    text_cache_dir: str = field(
        default="runs/cache/text_representations",
        metadata={"help": "Disk cache of the item text representations (contrastive loss)."},
    )
    item_text_template: str = field(
        default="{title}", metadata={"help": "Text whose LLM hidden states represent an item (str.format: {title})."}
    )

    def __post_init__(self):
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or null, got {value}")
        if "{title}" not in self.item_text_template:
            raise ValueError(f"item_text_template must contain {{title}}, got {self.item_text_template!r}")


ARGUMENT_CLASSES = (ModelArguments, DataArguments, CL3MRecTrainingArguments)


def arguments_help(prog: str = "cl3mrec train") -> str:
    """Every field of the three argument dataclasses with its type, default and ``help``, one section per
    dataclass, formatted by ``HfArgumentParser`` (``cl3mrec train --help`` shows it; any field is a YAML key or a
    ``key=value`` / ``--key value`` override)."""
    sections = []
    for cls in ARGUMENT_CLASSES:
        actions = [action for action in HfArgumentParser(cls)._actions if action.dest != "help"]
        formatter = argparse.ArgumentDefaultsHelpFormatter(prog)
        formatter.start_section(f"{cls.__name__} ({cls.__doc__.strip().splitlines()[0]})")
        formatter.add_arguments(actions)
        formatter.end_section()
        sections.append(formatter.format_help())
    return "\n".join(sections)


def parse_overrides(overrides: list[str]) -> dict:
    """``["key=value", "--key", "value", "--key=value"]`` → ``{key: yaml-parsed value}``."""
    result, index = {}, 0
    while index < len(overrides):
        token = overrides[index].removeprefix("--")
        if "=" in token:
            key, value = token.split("=", 1)
        elif overrides[index].startswith("--") and index + 1 < len(overrides):
            key, value = token, overrides[index + 1]
            index += 1
        else:
            raise ValueError(f"cannot read override {overrides[index]!r}: use key=value or --key value")
        try:
            result[key.replace("-", "_")] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ValueError(f"override {key}={value!r}: not a valid YAML value; quote it or fix it") from None
        index += 1
    return result


def load_stage_config(path: str | Path, _seen: tuple = ()) -> dict:
    """A stage YAML as a dict, with inheritance: ``base: other.yaml`` (relative to this file) is read first and
    this file's keys override it; bases may have bases. A dataset keeps its shared settings in one base file and
    each experiment states only what differs.

    Raises:
        ValueError: not a mapping, a missing base file, or a cycle of bases (each named with the file).
    """
    path = Path(path)
    values = load_yaml_file(path) or {}
    if not isinstance(values, dict):
        raise ValueError(f"{path}: expected a mapping of argument names to values")
    base = values.pop("base", None)
    if base is None:
        return values
    base_path = (path.parent / str(base)).resolve()
    if base_path in _seen or base_path == path.resolve():
        raise ValueError(f"{path}: base {base} makes a cycle of base files")
    if not base_path.is_file():
        raise ValueError(f"{path}: base file {base} not found (looked for {base_path})")
    return {**load_stage_config(base_path, _seen + (path.resolve(),)), **values}


def parse_config(
    config: str | Path | dict, overrides: list[str] | dict | None = None, source: str = "<dict>"
) -> tuple[ModelArguments, DataArguments, CL3MRecTrainingArguments]:
    """Read one stage's YAML (or dict) + overrides into the three dataclasses.

    Args:
        source: where a dict ``config`` came from, for error messages (a YAML file names itself).

    Raises:
        ValueError: an unknown key (named with the file), or a value a dataclass refuses.
    """
    if isinstance(config, dict):
        values = dict(config)
    else:
        source = str(config)
        values = load_stage_config(config)
    overrides = overrides if isinstance(overrides, dict) else parse_overrides(overrides or [])
    known = {name: f for cls in ARGUMENT_CLASSES for name, f in cls.__dataclass_fields__.items()}
    refuse_unknown(values, known, source)
    refuse_unknown(overrides, known, "command-line override")
    # parse_dict converts nothing: wrong types are named here, with where the value came from (an overridden value
    # of the file is not read)
    kept = {key: value for key, value in values.items() if key not in overrides}
    values = {
        **checked_values(kept, ARGUMENT_CLASSES, source),
        **checked_values(overrides, ARGUMENT_CLASSES, "command-line override"),
    }
    return HfArgumentParser(ARGUMENT_CLASSES).parse_dict(values)
