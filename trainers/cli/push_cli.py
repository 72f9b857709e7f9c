"""``cl3mrec push``: upload a saved model and its rendered card to the Hugging Face Hub
(:func:`trainers.hub.push.push_model`).

    cl3mrec push --model runs/ml1m/final --repo-id ORG/NAME [--private] [--revision BRANCH] [--commit-message MSG]
    cl3mrec push --model runs/ml1m/final --repo-id ORG/NAME --dry-run   # check the folder, print the card only
"""

import sys

from ..hub.push import push_model, render_push_card


def _run(args) -> int:
    card_kwargs = {"base_model": args.base_model, "datasets": args.dataset or None}
    if args.dry_run:  # the card to stdout; no request, nothing written to the folder
        sys.stdout.write(f"{render_push_card(args.model, args.repo_id, card_kwargs)}\n")
        return 0
    push_model(
        args.model,
        args.repo_id,
        private=args.private or None,
        revision=args.revision,
        commit_message=args.commit_message,
        card_kwargs=card_kwargs,
    )
    return 0


def register(subparsers) -> None:
    """Add the ``push`` subcommand to the ``cl3mrec`` parser."""
    parser = subparsers.add_parser("push", help="upload a saved model and its model card to the Hub")
    parser.add_argument("--model", required=True, help="saved model directory (config.json, weights, tokenizer)")
    parser.add_argument("--repo-id", required=True, help="Hub repo, ORG/NAME")
    parser.add_argument("--private", action="store_true", help="create the repo as private")
    parser.add_argument("--revision", default=None, help="branch to push to (default: main)")
    parser.add_argument("--commit-message", default=None, help="commit summary")
    parser.add_argument("--base-model", default=None, help="Hub id of the base LLM for the card metadata")
    parser.add_argument(
        "--dataset", action="append", default=[], help="Hub dataset id for the card metadata (repeatable)"
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="check the folder and print the card to stdout; push nothing"
    )
    parser.set_defaults(func=_run)
