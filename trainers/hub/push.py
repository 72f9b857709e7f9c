"""Check a saved model directory, (re)render its card and upload it to the Hugging Face Hub (``cl3mrec push``,
:mod:`trainers.cli.push_cli`, is its command line).

The token comes from the usual places (``HF_TOKEN``, ``hf auth login``); ``HF_ENDPOINT`` selects the Hub. The
folder goes up as it is, except that no local path leaves the machine: the JSON records that name one (the LLM
folder in ``config.json``, ``init_from`` / data paths in the training records) are uploaded without it.
"""

import json
import logging
from pathlib import Path
from typing import Optional

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError, HTTPError
from huggingface_hub.utils import filter_repo_objects, validate_repo_id
from huggingface_hub.utils._paths import DEFAULT_IGNORE_PATTERNS

from ..atomic_io import write_text_atomic
from ..model_dirs import check_weights
from .model_card import public_model_name, render_model_card

logger = logging.getLogger(__name__)

WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
# Trainer state, checkpoints, logs and NumPy working files (scores, row indices) stay local: they are large, and
# some are pickles. The card's plots (plots/*.png) are uploaded.
IGNORE_PATTERNS = [
    "checkpoint-*",
    "runs/*",
    "*.npy",
    "__pycache__/*",
    "*.pyc",
    "optimizer.pt",
    "scheduler.pt",
    "rng_state*.pth",
    "training_args.bin",
    ".README.*",
    *DEFAULT_IGNORE_PATTERNS,  # .git, .cache/huggingface: what upload_folder leaves out
]
# Provenance that names local paths: the folder keeps it for its owner, the upload leaves it out.
LOCAL_PATH_FIELDS = {
    "training_summary.json": ("init_from", "data_source"),
    "metrics.json": ("config_file", "data", "data_source"),  # a CF run's
    "search.json": ("config_file",),
}


def validate_model_dir(model_dir: Path) -> dict:
    """Check that ``model_dir`` is a complete saved model and return its ``config.json``.

    Required: ``config.json``; weights (``*.safetensors`` or ``pytorch_model*.bin``); for LLM models
    (``model_type == "cl3mrec"``) a tokenizer (``tokenizer_config.json`` plus ``tokenizer.json``,
    ``tokenizer.model`` or ``vocab.json``) and the processor (``processor_config.json``), which the card's
    usage snippet loads; every local module named in ``config.auto_map`` or ``config.custom_pipelines`` as a
    ``.py`` file.

    Raises:
        FileNotFoundError: the directory or a required file is missing (the message names it).
        ValueError: ``config.json`` is not a JSON object, or a safetensors file is truncated or corrupt.
    """
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model directory {model_dir} does not exist")
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        if (model_dir / "merged" / "config.json").is_file():
            export = model_dir / "merged"
            raise FileNotFoundError(f"{model_dir} is a training stage's folder: push its export, {export}")
        raise FileNotFoundError(f"{model_dir} has no config.json: save the model with save_pretrained first")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} must hold a JSON object")
    if not any(next(model_dir.glob(pattern), None) for pattern in WEIGHT_GLOBS):
        raise FileNotFoundError(f"{model_dir} has no weights (expected one of {', '.join(WEIGHT_GLOBS)})")
    check_weights(model_dir, "--model")  # a truncated or corrupt safetensors file is never uploaded
    if config.get("model_type") == "cl3mrec":
        if not (model_dir / "tokenizer_config.json").is_file() or not any(
            (model_dir / name).is_file() for name in TOKENIZER_FILES
        ):
            raise FileNotFoundError(
                f"{model_dir} has no tokenizer (expected tokenizer_config.json and one of "
                f"{', '.join(TOKENIZER_FILES)}): save the tokenizer next to the model"
            )
        if not (model_dir / "processor_config.json").is_file():
            raise FileNotFoundError(
                f"{model_dir} has no processor_config.json: export it with trainers.llm_loading.export_merged "
                "(the model card's snippet loads the processor and the cl3mrec-scoring pipeline)"
            )
    auto_map = config.get("auto_map") or {}
    if not auto_map:
        logger.warning("%s: config.json has no auto_map; AutoModel(trust_remote_code=True) will not load it", model_dir)
    code = {f"auto_map[{auto_class!r}]": reference for auto_class, reference in auto_map.items()}
    for task, info in (config.get("custom_pipelines") or {}).items():
        code[f"custom_pipelines[{task!r}]['impl']"] = info.get("impl")
    for field, reference in code.items():
        for target in [reference] if isinstance(reference, str) else reference:
            if not target or "--" in target:  # None (no fast tokenizer) or code in another repo
                continue
            module_file = model_dir / f"{target.rsplit('.', 1)[0]}.py"
            if not module_file.is_file():
                raise FileNotFoundError(f"{model_dir}: config.{field} = {target!r} but {module_file.name} is missing")
    return config


def _public_names(value):
    """``value`` (parsed ``config.json``) with every ``_name_or_path`` (transformers writes the LLM's, in
    ``text_config``) reduced to its last part unless it is a Hub id (:func:`~.model_card.public_model_name`)."""
    if isinstance(value, dict):
        return {
            key: public_model_name(item) if key == "_name_or_path" and isinstance(item, str) else _public_names(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_public_names(item) for item in value]
    return value


def public_json(name: str, path: Path) -> Optional[bytes]:
    """The bytes to upload for the JSON file ``path`` (uploaded as ``name``) when the local file names local paths
    (``config.json``'s ``_name_or_path``, the :data:`LOCAL_PATH_FIELDS`), else None (upload the file as it is)."""
    if name != "config.json" and name not in LOCAL_PATH_FIELDS:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not a JSON file ({error}); fix or remove it before pushing") from None
    if not isinstance(data, dict):
        return None  # config.json was checked by validate_model_dir; the others are only records
    public = _public_names(data) if name == "config.json" else data
    public = {key: item for key, item in public.items() if key not in LOCAL_PATH_FIELDS.get(name, ())}
    return None if public == data else (json.dumps(public, indent=2, sort_keys=True) + "\n").encode()


def upload_operations(model_dir: Path) -> list[CommitOperationAdd]:
    """What :func:`push_model` commits besides the card (``README.md``, which it adds once written): every file of
    ``model_dir`` but the :data:`IGNORE_PATTERNS`, as ``upload_folder`` would, except that its JSON records go up
    without local paths (:func:`public_json`).

    Raises:
        ValueError: one of those records is not JSON (the message names it).
    """
    files = {path.relative_to(model_dir).as_posix(): path for path in sorted(model_dir.rglob("*")) if path.is_file()}
    operations = []
    for name in filter_repo_objects(files, ignore_patterns=[*IGNORE_PATTERNS, "README.md"]):
        public = public_json(name, files[name])
        operations.append(CommitOperationAdd(path_in_repo=name, path_or_fileobj=public or files[name]))
    return operations


def render_push_card(model_dir, repo_id: str, card_kwargs: Optional[dict] = None) -> ModelCard:
    """Check ``repo_id`` and ``model_dir`` (:func:`validate_model_dir`) and render the card :func:`push_model` would
    upload, without a request and without writing anything (``cl3mrec push --dry-run`` prints it).

    Raises:
        ValueError: ``repo_id`` is not a Hub repo id, or the folder's JSON files are bad (the message names them).
        FileNotFoundError: the folder or a required file is missing.
    """
    try:
        validate_repo_id(repo_id)
    except ValueError as error:  # huggingface_hub's message does not say which argument
        raise ValueError(f"repo_id {repo_id!r}: not a Hub repo id ({error}); use ORG/NAME") from None
    validate_model_dir(Path(model_dir))
    return render_model_card(model_dir, repo_id=repo_id, **(card_kwargs or {}))


def push_model(
    model_dir,
    repo_id: str,
    *,
    private: Optional[bool] = None,
    revision: Optional[str] = None,
    commit_message: Optional[str] = None,
    token: Optional[str] = None,
    card_kwargs: Optional[dict] = None,
) -> CommitInfo:
    """Validate ``model_dir``, render its card, create ``repo_id`` on the Hub, write the card to ``README.md`` and
    upload the folder. A bad folder or card is refused before any request, and a Hub that cannot be reached before
    ``README.md`` is rewritten.

    Args:
        model_dir: a saved model directory (see :func:`validate_model_dir`).
        repo_id: ``"org/name"`` (or ``"name"`` in the token owner's namespace); created if missing.
        private: visibility of a newly created repo (ignored when it exists).
        revision: branch to commit to (created from ``main`` if missing); default ``main``.
        commit_message: default ``"Upload <dir name> with cl3mrec"``.
        token: Hub token; default ``HF_TOKEN`` / the saved login.
        card_kwargs: extra keyword arguments of :func:`trainers.hub.model_card.render_model_card`
            (``base_model``, ``datasets``, ``stage_recipe``, ``eval_results``, ...).

    Returns:
        The ``CommitInfo`` of the upload commit.

    Raises:
        ConnectionError: the Hub cannot be reached (one line naming the endpoint; nothing is committed).
    """
    model_dir = Path(model_dir)
    card = render_push_card(model_dir, repo_id, card_kwargs)
    operations = upload_operations(model_dir)  # reads every record before any request

    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        card_path = write_text_atomic(model_dir / "README.md", str(card))
        logger.info("wrote model card %s", card_path)
        commit = api.create_commit(
            repo_id=repo_id,
            operations=[*operations, CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card_path)],
            revision=revision,
            commit_message=commit_message or f"Upload {model_dir.resolve().name} with cl3mrec",
        )
    except HfHubHTTPError:  # the Hub answered (no token, no access, ...): its own message says what
        raise
    except HTTPError as error:  # no answer at all: DNS, refused connection, timeout, proxy
        raise ConnectionError(
            f"cannot reach the Hugging Face Hub at {api.endpoint} to push {model_dir} to {repo_id} ({error}); "
            "check the network (or HF_ENDPOINT) and rerun: nothing was committed"
        ) from error
    logger.info("pushed %s to %s (commit %s)", model_dir, repo_url, commit.oid)
    return commit
